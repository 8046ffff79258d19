//! Incident alerts made after the last save by a process that then died.
//!
//! The correlator's state is saved every checkpoint interval, so the alerts an incident got
//! after the last save are not in the state a restart restores. Without more, the restored
//! incident would make its next alert under a `seq` one of them had, with other content (the
//! clock moved on, the records since are counted again), and a receiver that drops duplicates by
//! `id:seq` would drop it. So the alerting stage records each incident alert's `id`, `seq` and
//! [`Alert::content_digest`] before any sink gets it (`alerting::SentLog`), and hands what it
//! finds after the restored save to [`super::Correlator::sent_after_save`]. An incident alert
//! made again under a recorded `seq` keeps it when it says the same (the same alert twice: a
//! receiver drops one); one that says something else moves past every `seq` recorded for the
//! incident.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// Incidents with recorded alerts kept at most (oldest dropped first). Each kill -9 adds the
/// incidents alerted in the last checkpoint interval; an incident's entries go once it moves
/// past them or closes.
pub const MAX_SENT_INCIDENTS: usize = 1024;

/// One incident alert that was handed to the sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentSeq {
    /// Incident id.
    pub id: String,
    /// The alert's `seq`.
    pub seq: u64,
    /// [`Alert::content_digest`].
    pub digest: u64,
}

/// Per incident: when it came and its recorded (`seq`, digest) pairs.
type SentById = HashMap<String, (u64, Vec<(u64, u64)>), foldhash::fast::RandomState>;

/// The recorded alerts of incidents that may make an alert under one of their `seq`s again.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Per incident: when it came (a count; 0 for an incident open at the restore, which is
    /// never dropped: those are bounded by `max_open_incidents`) and its recorded (`seq`,
    /// digest) pairs.
    by_id: SentById,
    /// The other ids in the order they came, with that count: an id that went and came back is
    /// listed twice, and only the entry with its current count stands for it.
    order: VecDeque<(u64, String)>,
    added: u64,
    /// Ids in `by_id` with a count (capped at [`MAX_SENT_INCIDENTS`]).
    capped: usize,
}

impl Sent {
    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Record an alert, unless the incident's alerts so far (`passed`: the `seq` it is at, when
    /// it is open) already cover it.
    pub(super) fn add(&mut self, entry: SentSeq, passed: Option<u64>) {
        if passed.is_some_and(|seq| seq >= entry.seq) {
            return;
        }
        if !self.by_id.contains_key(&entry.id) {
            let no = if passed.is_some() {
                0
            } else {
                while self.capped >= MAX_SENT_INCIDENTS {
                    let Some((no, old)) = self.order.pop_front() else {
                        break;
                    };
                    if self.by_id.get(&old).is_some_and(|(n, _)| *n == no) {
                        self.remove(&old);
                    }
                }
                self.added += 1;
                self.capped += 1;
                self.order.push_back((self.added, entry.id.clone()));
                self.added
            };
            self.by_id.insert(entry.id.clone(), (no, Vec::new()));
        }
        let Some((_, list)) = self.by_id.get_mut(&entry.id) else {
            return;
        };
        if !list.contains(&(entry.seq, entry.digest)) {
            list.push((entry.seq, entry.digest));
        }
    }

    /// Give `alert` (just made, under the incident's next `seq`) a `seq` no earlier alert of the
    /// incident had with other content; returns the `seq` the incident is at after it. An alert
    /// recorded with the same content keeps that one's `seq` — also a later one, where an
    /// earlier restart (killed as well) moved it.
    pub(super) fn settle(&mut self, alert: &mut Alert) -> u64 {
        let Some((_, list)) = self.by_id.get(&alert.id) else {
            return alert.seq;
        };
        let last = list.iter().map(|&(seq, _)| seq).max().unwrap_or(0);
        let digest = alert.content_digest();
        let same = list
            .iter()
            .filter(|&&(seq, d)| d == digest && seq >= alert.seq)
            .map(|&(seq, _)| seq)
            .min();
        let taken = list.iter().any(|&(seq, _)| seq == alert.seq);
        match same {
            Some(seq) => alert.seq = seq,
            None if taken => alert.seq = last + 1,
            None => {}
        }
        if alert.seq >= last {
            self.forget(&alert.id);
        }
        alert.seq
    }

    /// The incident closed: its id is not used again.
    pub(super) fn forget(&mut self, id: &str) {
        self.remove(id);
        // `order` keeps the id until `add` passes it (it is added only at a restore).
        if self.by_id.is_empty() {
            self.order.clear();
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some((no, _)) = self.by_id.remove(id) {
            if no > 0 {
                self.capped -= 1;
            }
        }
    }

    /// What to save with the snapshot: the incidents open at the restore, then the others,
    /// oldest first.
    pub(super) fn entries(&self) -> Vec<SentSeq> {
        let mut out = Vec::new();
        let mut open: Vec<_> = self.by_id.iter().filter(|(_, (no, _))| *no == 0).collect();
        open.sort_by(|a, b| a.0.cmp(b.0));
        let others = self
            .order
            .iter()
            .filter_map(|(no, id)| self.by_id.get_key_value(id).filter(|(_, (n, _))| n == no));
        for (id, (_, list)) in open.into_iter().chain(others) {
            out.extend(list.iter().map(|&(seq, digest)| SentSeq {
                id: id.clone(),
                seq,
                digest,
            }));
        }
        out
    }
}
