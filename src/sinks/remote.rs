//! The delivery task of a remote sink: takes alerts from its outbox in arrival order, sends them,
//! removes them when accepted; on failure backs off (exponential, with jitter, at least as long as
//! a `Retry-After` asks) the incident — or the whole sink when the receiver itself is unreachable
//! — so order is kept per incident; drops an alert the receiver refused for good and reports the
//! loss; expires alerts older than the maximum age and reports the count; batches them in digest
//! mode (splitting a refused digest to find the refused alert); keeps Alertmanager's open
//! incidents firing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::alertmanager::{self, OpenSet};
use super::config::DeliverySettings;
use super::http::{SendError, Transport};
use super::outbox::{Entry, Outbox};
use super::policy::Mode;
use super::{Counters, LossNotice, now_ms};

/// Most alerts in one digest.
const DIGEST_MAX: usize = 200;

/// The delay before retry number `attempts` (1-based): `initial · 2^(attempts-1)` capped at `max`,
/// with "equal jitter" (half fixed, half `random` ∈ [0, 1)) so the retries of many sinks spread out.
pub(crate) fn backoff_delay(initial_ms: u64, max_ms: u64, attempts: u32, random: f64) -> Duration {
    let exp = initial_ms as f64 * 2f64.powi(attempts.saturating_sub(1).min(40) as i32);
    let capped = exp.min(max_ms as f64);
    let ms = capped / 2.0 + random.clamp(0.0, 1.0) * capped / 2.0;
    Duration::from_millis(ms.max(1.0) as u64)
}

/// A remote sink's task state.
#[derive(Debug)]
pub(crate) struct RemoteSink {
    pub name: String,
    pub transport: Transport,
    pub outbox: Arc<Mutex<Outbox>>,
    pub delivery: DeliverySettings,
    pub mode: Mode,
    pub digest_interval_secs: u64,
    pub notify: Arc<Notify>,
    pub stop: watch::Receiver<bool>,
    pub loss_tx: mpsc::UnboundedSender<LossNotice>,
    pub counters: Arc<Counters>,
    pub am_open: Option<OpenSet>,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    next_at: Instant,
}

/// Digest mode's state between passes.
#[derive(Debug, Clone, Copy)]
struct Digest {
    /// Failed attempts in a row (for the backoff).
    attempts: u32,
    /// The most alerts in the next digest: [`DIGEST_MAX`], halved after each refusal so that
    /// the refused alert (or a size the receiver takes) is found in a few requests; the size
    /// of a digest that failed, so that its retry is the same digest.
    limit: usize,
    /// The limit before a failed digest fixed it at that digest's size, restored once it is
    /// delivered.
    before_retry: Option<usize>,
}

impl RemoteSink {
    /// When to try again after failed attempt number `attempts`: the backoff, or later when the
    /// receiver asked for it (`Retry-After`).
    fn retry_at(&self, attempts: u32, err: &SendError) -> Instant {
        let backoff = backoff_delay(
            self.delivery.retry_initial_ms,
            self.delivery.retry_max_ms,
            attempts,
            fastrand::f64(),
        );
        Instant::now() + backoff.max(err.retry_after().unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        super::lock(&self.outbox)
    }

    fn remove(&self, seq: u64) {
        if let Err(e) = self.lock().remove(seq) {
            self.counters.set_error(format!("outbox: {e}"));
        }
    }

    /// Drop alerts older than the maximum age; report how many.
    fn expire(&self, retry: &mut HashMap<u64, Retry>) -> Option<u64> {
        let now = now_ms();
        let max_ms = self.delivery.max_age_secs.saturating_mul(1000);
        let old: Vec<u64> = self
            .lock()
            .snapshot()
            .iter()
            .filter(|e| now.saturating_sub(e.created_ms) > max_ms)
            .map(|e| e.seq)
            .collect();
        if old.is_empty() {
            return None;
        }
        for seq in &old {
            self.remove(*seq);
            retry.remove(seq);
        }
        let n = old.len() as u64;
        self.counters.expired.fetch_add(n, Ordering::Relaxed);
        let _ = self.loss_tx.send(LossNotice {
            sink: self.name.clone(),
            count: n,
            what: format!(
                "alerts expired undelivered after {} s in the outbox of sink {}",
                self.delivery.max_age_secs, self.name
            ),
        });
        Some(n)
    }

    /// The receiver refused these alerts for good ([`SendError::is_refusal`]): remove them, count
    /// them as dropped, and report the loss like an expiry (a `loss` alert on the other sinks)
    /// and in the log, with the receiver's answer.
    fn drop_refused(&self, batch: &[Arc<Entry>], err: &SendError) {
        for e in batch {
            self.remove(e.seq);
        }
        let n = batch.len() as u64;
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        let what = format!(
            "alerts refused for good by the receiver of sink {}: {err}",
            self.name
        );
        let keys: Vec<&str> = batch.iter().map(|e| e.key.as_str()).collect();
        crate::log_warn!("LOSS {n} {what} (dropped: {})", keys.join(", "));
        let _ = self.loss_tx.send(LossNotice {
            sink: self.name.clone(),
            count: n,
            what,
        });
    }

    fn earliest_expiry(&self) -> Option<Instant> {
        let snap = self.lock().snapshot();
        let oldest = snap.iter().map(|e| e.created_ms).min()?;
        let due = oldest + self.delivery.max_age_secs.saturating_mul(1000) + 1;
        Some(Instant::now() + Duration::from_millis(due.saturating_sub(now_ms())))
    }

    async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SendError> {
        let now = now_ms();
        let result = self.transport.send(batch, now).await;
        match &result {
            Ok(()) => {
                self.counters
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let (Some(open), Some(spec)) =
                    (self.am_open.as_mut(), self.transport.alertmanager_spec())
                {
                    let now_s = super::rfc3339(now);
                    for e in batch {
                        open.record(&e.view, &alertmanager::am_alert(spec, &e.view, &now_s), now);
                    }
                    if let Err(e) = open.save() {
                        self.counters
                            .set_error(format!("saving open Alertmanager alerts: {e}"));
                    }
                }
            }
            Err(e) => {
                self.counters
                    .failed_attempts
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.set_error(e.to_string());
            }
        }
        result
    }

    /// One pass over the outbox in arrival order. Returns when to look again.
    async fn pass(
        &mut self,
        retry: &mut HashMap<u64, Retry>,
        sink_until: &mut Option<Instant>,
    ) -> Option<Instant> {
        if let Some(t) = *sink_until {
            if Instant::now() < t {
                return Some(t);
            }
            *sink_until = None;
        }
        let snap = self.lock().snapshot();
        let live: HashSet<u64> = snap.iter().map(|e| e.seq).collect();
        retry.retain(|seq, _| live.contains(seq));
        let mut blocked: HashSet<String> = HashSet::new();
        for e in snap {
            if blocked.contains(&e.incident) {
                continue;
            }
            if let Some(r) = retry.get(&e.seq) {
                if r.next_at > Instant::now() {
                    blocked.insert(e.incident.clone());
                    continue;
                }
            }
            match self.deliver(std::slice::from_ref(&e)).await {
                Ok(()) => {
                    self.remove(e.seq);
                    retry.remove(&e.seq);
                }
                // Gone: the incident's next alert may go now.
                Err(err) if err.is_refusal() => {
                    self.drop_refused(std::slice::from_ref(&e), &err);
                    retry.remove(&e.seq);
                }
                Err(err) => {
                    let attempts = retry.get(&e.seq).map_or(0, |r| r.attempts) + 1;
                    let next_at = self.retry_at(attempts, &err);
                    retry.insert(e.seq, Retry { attempts, next_at });
                    blocked.insert(e.incident.clone());
                    if err.is_sink_wide() {
                        *sink_until = Some(next_at);
                        return Some(next_at);
                    }
                }
            }
        }
        retry.values().map(|r| r.next_at).min()
    }

    /// Digest mode: send everything waiting once the oldest alert has waited an interval.
    async fn digest_pass(
        &mut self,
        digest: &mut Digest,
        sink_until: &mut Option<Instant>,
    ) -> Option<Instant> {
        if let Some(t) = *sink_until {
            if Instant::now() < t {
                return Some(t);
            }
            *sink_until = None;
        }
        let snap = self.lock().snapshot();
        let oldest = snap.iter().map(|e| e.created_ms).min()?;
        let due_ms = oldest + self.digest_interval_secs.saturating_mul(1000);
        let now = now_ms();
        if now < due_ms {
            return Some(Instant::now() + Duration::from_millis(due_ms - now));
        }
        let batch: Vec<Arc<Entry>> = snap.into_iter().take(digest.limit).collect();
        match self.deliver(&batch).await {
            Ok(()) => {
                digest.attempts = 0;
                if let Some(limit) = digest.before_retry.take() {
                    digest.limit = limit;
                }
                for e in &batch {
                    self.remove(e.seq);
                }
                // More than one digest's worth: go on at once.
                (!self.lock().is_empty()).then(Instant::now)
            }
            // Refused for good: the same digest would be refused again. Send the first half
            // next, at once (a different request), until the refused alert is alone.
            Err(err) if err.is_refusal() && batch.len() > 1 => {
                digest.before_retry = None;
                digest.limit = batch.len() / 2;
                Some(Instant::now())
            }
            Err(err) if err.is_refusal() => {
                self.drop_refused(&batch, &err);
                digest.before_retry = None;
                digest.limit = DIGEST_MAX;
                (!self.lock().is_empty()).then(Instant::now)
            }
            // Retry the same digest (the oldest alerts stay first in the outbox): the same
            // alerts under the same idempotency key / Message-ID, so that a receiver that did
            // take the failed attempt (a timeout after the data went through) can tell it
            // again, instead of a larger digest with new alerts under a new key.
            Err(err) => {
                digest.attempts += 1;
                digest.before_retry.get_or_insert(digest.limit);
                digest.limit = batch.len();
                let t = self.retry_at(digest.attempts, &err);
                *sink_until = Some(t);
                Some(t)
            }
        }
    }

    async fn repost(&mut self) {
        let max_age_ms = self.delivery.max_age_secs.saturating_mul(1000);
        let Some(open) = self.am_open.as_mut() else {
            return;
        };
        if open.prune(max_age_ms, now_ms()) > 0 {
            let _ = open.save();
        }
        if open.open.is_empty() {
            return;
        }
        let alerts = serde_json::Value::Array(open.open.values().map(|a| a.am.clone()).collect());
        if let Err(e) = self.transport.post_json(&alerts).await {
            self.counters
                .set_error(format!("re-posting open alerts: {e}"));
        }
    }

    /// Run until stopped; on stop, one last attempt for what is due, then return (undelivered
    /// alerts stay in the outbox for the next start).
    pub async fn run(mut self) {
        let mut retry: HashMap<u64, Retry> = HashMap::new();
        let mut sink_until: Option<Instant> = None;
        let mut digest = Digest {
            attempts: 0,
            limit: DIGEST_MAX,
            before_retry: None,
        };
        let repost_every = self
            .transport
            .alertmanager_spec()
            .map(|a| Duration::from_secs(a.repost_interval_secs));
        let mut next_repost = repost_every.map(|_| Instant::now());
        loop {
            let stopping = *self.stop.borrow();
            self.expire(&mut retry);
            let mut wake = if self.mode == Mode::Digest {
                self.digest_pass(&mut digest, &mut sink_until).await
            } else {
                self.pass(&mut retry, &mut sink_until).await
            };
            if stopping {
                self.transport.close().await;
                return;
            }
            if let (Some(t), Some(every)) = (next_repost, repost_every) {
                if Instant::now() >= t {
                    self.repost().await;
                    next_repost = Some(Instant::now() + every);
                }
            }
            for t in [next_repost, self.earliest_expiry()].into_iter().flatten() {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = sleep => {}
                changed = self.stop.changed() => {
                    // The SinkSet was dropped without shutdown: stop rather than spin.
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let d = |a, r| backoff_delay(1000, 60_000, a, r).as_millis();
        assert_eq!(d(1, 0.0), 500);
        assert_eq!(d(1, 0.999_999), 999);
        assert_eq!(d(2, 0.0), 1000);
        assert_eq!(d(4, 0.0), 4000);
        assert_eq!(d(10, 0.0), 30_000);
        assert_eq!(d(1000, 0.0), 30_000);
        assert!(d(1000, 0.999_999) <= 60_000);
    }
}
