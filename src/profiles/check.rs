//! Compile checks of suggested rules, off the alert path.
//!
//! A check runs `apparmor_parser` ([`system::check_suggestion_with`]): 0.05–0.4 s a profile
//! natively, seconds under emulation. Run inline, a burst of new suggestions held every alert
//! behind it (30 new suggestions: 4.6 s before the last alert). [`Checker`] runs the checks one
//! at a time on its own thread and remembers their results until the tree changes. An alert
//! waits for its check at most `wait`, and all alerts together at most `wait` plus half the time
//! since (a budget: a burst of new suggestions delays the alerts by `wait` at most, then the
//! output thread waits at most half its time). An alert whose check is not done in its wait goes
//! out with the check `skipped` and a message saying so; the incident's later alerts (update,
//! close) carry the result.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Set when the daemon stops or reloads: alerts stop waiting for their checks, so the drain
/// is not held by a slow `apparmor_parser` (the wait may be configured up to 10 min).
static STOP_WAITING: AtomicBool = AtomicBool::new(false);

/// Alerts no longer wait for checks (the daemon is draining); until the next [`Checker::start`].
pub fn stop_waiting() {
    STOP_WAITING.store(true, Ordering::Relaxed);
}

/// How often a waiting alert wakes to feed systemd's watchdog and look for [`stop_waiting`].
const WAKE: Duration = Duration::from_millis(500);

use super::suggest::{CheckStatus, Suggestion};
use super::system;
use crate::lock;

/// A check is of one rule in one file.
type Key = (String, String);
type Outcome = (CheckStatus, Option<String>);

#[derive(Debug, Default)]
struct State {
    results: HashMap<Key, Outcome>,
    queued: HashSet<Key>,
    /// Bumped when the tree changes: results and queued checks of an older tree are dropped.
    generation: u64,
    /// How long alerts may still wait in all: `wait` at first, spent by waiting, earned back at
    /// half the wall clock's rate, never more than `wait`.
    budget: Duration,
    /// When `budget` was last brought up to date.
    updated: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug)]
struct Job {
    key: Key,
    suggestion: Suggestion,
    generation: u64,
}

/// The compile-check thread and its results. Dropping it ends the thread after the check in
/// progress.
#[derive(Debug)]
pub struct Checker {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    wait: Duration,
}

impl Checker {
    /// Start the thread; checks copy and compile the tree at `root`.
    pub fn start(root: PathBuf, wait: Duration) -> Checker {
        STOP_WAITING.store(false, Ordering::Relaxed);
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("compile-check".into())
            .spawn(move || run(&worker, &root, rx));
        let jobs = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                crate::log_warn!(
                    "cannot start the compile-check thread: {e}; suggestions go unchecked"
                );
                None
            }
        };
        Checker { shared, jobs, wait }
    }

    /// Fill in `s.check` and `s.check_message`: from the finished check of the same rule, or
    /// by queueing it and waiting (see the module documentation).
    pub fn check(&self, s: &mut Suggestion) {
        let key = (s.file.clone(), s.rule.clone());
        let mut st = lock(&self.shared.state);
        if let Some(done) = st.results.get(&key) {
            return set(s, done);
        }
        if !st.queued.contains(&key) {
            let job = Job {
                key: key.clone(),
                suggestion: s.clone(),
                generation: st.generation,
            };
            if self.jobs.as_ref().is_none_or(|j| j.send(job).is_err()) {
                s.check = CheckStatus::Skipped;
                s.check_message = Some("the compile-check thread is not running".into());
                return;
            }
            st.queued.insert(key.clone());
        }
        let start = Instant::now();
        let earned = st
            .updated
            .map_or(self.wait, |t| start.duration_since(t) / 2);
        st.budget = (st.budget + earned).min(self.wait);
        st.updated = Some(start);
        let deadline = start + st.budget;
        loop {
            if let Some(done) = st.results.get(&key) {
                set(s, done);
                spend(&mut st, start);
                return;
            }
            let now = Instant::now();
            if !st.queued.contains(&key) || now >= deadline || STOP_WAITING.load(Ordering::Relaxed)
            {
                break;
            }
            st = match self
                .shared
                .done
                .wait_timeout(st, (deadline - now).min(WAKE))
            {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            // Waiting by configuration is not a stuck pipeline.
            crate::notify::keep_alive();
        }
        spend(&mut st, start);
        s.check = CheckStatus::Skipped;
        s.check_message = Some(format!(
            "the compile check had not finished when this alert went out ({} queued); the \
             incident's later alerts carry its result",
            st.queued.len()
        ));
    }

    /// The tree changed: forget every result (a check of the old tree still running is
    /// dropped when it ends).
    pub fn invalidate(&self) {
        let mut st = lock(&self.shared.state);
        st.generation += 1;
        st.results.clear();
    }

    /// Wait until no check is queued, at most `limit`; true when none is.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = lock(&self.shared.state);
        while !st.queued.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.shared.done.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// A wait that began at `start` has ended: take it from the budget, which earns again from now
/// (not during the wait).
fn spend(st: &mut State, start: Instant) {
    st.budget = st.budget.saturating_sub(start.elapsed());
    st.updated = Some(Instant::now());
}

fn set(s: &mut Suggestion, (status, message): &Outcome) {
    s.check = *status;
    s.check_message = message.clone();
}

/// The thread: one check at a time, in the order asked.
fn run(shared: &Shared, root: &std::path::Path, jobs: mpsc::Receiver<Job>) {
    let mut baselines = system::Baselines::new();
    let mut generation = 0;
    for mut job in jobs {
        let current = lock(&shared.state).generation;
        if job.generation == current {
            if generation != current {
                baselines.clear();
                generation = current;
            }
            system::check_suggestion_with(root, &mut job.suggestion, &mut baselines);
        }
        let mut st = lock(&shared.state);
        st.queued.remove(&job.key);
        if st.generation == job.generation {
            let s = job.suggestion;
            st.results.insert(job.key, (s.check, s.check_message));
        }
        drop(st);
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::suggest::Edit;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/etc/apparmor.d")
    }

    fn suggestion(rule: &str) -> Suggestion {
        Suggestion {
            file: "/etc/apparmor.d/local/usr.bin.msmtp".into(),
            rule: rule.into(),
            check: CheckStatus::Skipped,
            reload: "apparmor_parser -r /etc/apparmor.d/usr.bin.msmtp".into(),
            placement: None,
            check_message: None,
            edit: Edit::Append {
                file: "local/usr.bin.msmtp".into(),
            },
            profile_file: "usr.bin.msmtp".into(),
        }
    }

    fn not_finished(s: &Suggestion) -> bool {
        s.check == CheckStatus::Skipped
            && s.check_message
                .as_deref()
                .is_some_and(|m| m.contains("had not finished"))
    }

    #[test]
    fn an_alert_waits_at_most_its_bound_and_later_alerts_get_the_result() {
        if system::find_program("apparmor_parser").is_none() {
            assert!(
                std::env::var_os("AW_REQUIRE_ALL").is_none(),
                "apparmor_parser is not installed and AW_REQUIRE_ALL is set"
            );
            eprintln!("SKIPPED: apparmor_parser is not installed (apt-get install apparmor)");
            return;
        }
        // No waiting: the alert goes out at once (the result cannot be in before the check is
        // even queued: the state stays locked from the lookup to the give-up).
        let c = Checker::start(root(), Duration::ZERO);
        let mut s = suggestion("/var/log/msmtp.log wk,");
        c.check(&mut s);
        assert!(not_finished(&s), "{s:?}");
        assert!(c.wait_idle(Duration::from_secs(60)));
        let mut again = suggestion("/var/log/msmtp.log wk,");
        c.check(&mut again);
        assert_eq!(again.check, CheckStatus::Passed, "{again:?}");
        // A changed tree forgets the result.
        c.invalidate();
        let mut after = suggestion("/var/log/msmtp.log wk,");
        c.check(&mut after);
        assert!(not_finished(&after), "{after:?}");
        assert!(c.wait_idle(Duration::from_secs(60)));

        // Waiting: a lone check is waited for, a failure reported with apparmor_parser's words.
        let c = Checker::start(root(), Duration::from_secs(60));
        let mut bad = suggestion("/var/log/msmtp.log wkz,");
        c.check(&mut bad);
        assert_eq!(bad.check, CheckStatus::Failed, "{bad:?}");
        assert!(bad.check_message.is_some());

        // The wait spent, the budget is what is left of 60 s; spent to nothing, an alert does
        // not wait (it earns back microseconds: not enough for a check).
        {
            let mut st = lock(&c.shared.state);
            assert!(st.budget < Duration::from_secs(60) && st.budget > Duration::from_secs(30));
            st.budget = Duration::ZERO;
            st.updated = Some(Instant::now());
        }
        let mut burst = suggestion("/var/log/msmtp-2.log wk,");
        c.check(&mut burst);
        assert!(not_finished(&burst), "{burst:?}");
        assert!(burst.check_message.unwrap().contains("1 queued"));
        assert!(c.wait_idle(Duration::from_secs(60)));
        let mut later = suggestion("/var/log/msmtp-2.log wk,");
        c.check(&mut later);
        assert_eq!(later.check, CheckStatus::Passed, "{later:?}");
    }
}
