//! `armorwatch run [--config FILE]`: the service. Follows the sources until SIGTERM/SIGINT, then
//! drains in order: the sources stop, the parsers flush, the outputs take the last events, the
//! correlator's open incidents are saved, the sinks write their queues (remote sinks keep what
//! they could not send in their outbox), the checkpoints are saved — all within
//! [`DRAIN_BOUND`], shorter than the unit's `TimeoutStopSec=20s`.
//!
//! SIGHUP reloads: the configuration file is read and validated first (sinks and correlator
//! settings included); an invalid one is logged with its key path and the running pipeline
//! continues untouched. A valid one drains the running pipeline like a stop (checkpoints saved,
//! incidents persisted) and starts a new one from the checkpoints, so nothing is lost or
//! delivered twice beyond the at-least-once window; file sinks are opened afresh (logrotate).
//!
//! The service manager hears `READY=1` once the sources are started, `RELOADING=1` (with
//! `MONOTONIC_USEC=`) and `READY=1` around a reload, `STOPPING=1`, `WATCHDOG=1` from the output
//! thread's tick and a `STATUS=` line (see [`crate::notify`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::{EXIT_CONFIG, EXIT_IOERR};
use crate::checkpoint::StateLock;
use crate::config::{self, Config};
use crate::metrics::{Metrics, MetricsOutput};
use crate::notify;
use crate::pipeline::{self, Mode, Plan};
use crate::sources;

/// The longest a stop (or the drain before a reload) may take; past it the process exits with
/// status 1 rather than being killed by systemd at `TimeoutStopSec=20s`. The sinks get 5 s of it.
pub const DRAIN_BOUND: Duration = Duration::from_secs(15);

/// Arguments of `armorwatch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file. Without one: automatic sources, JSON lines on standard output.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Without a `[sinks.*]` table: write every event (schema 1) to standard output instead of
    /// alerts.
    #[arg(long)]
    pub events: bool,
}

/// `--events`: with no sink configured, every event goes to standard output as JSON lines.
pub fn events_to_stdout(config: &mut Config) {
    if config.sinks.is_empty() {
        let mut table = toml::Table::new();
        table.insert("type".into(), toml::Value::String("stdout".into()));
        table.insert("content".into(), toml::Value::String("events".into()));
        config.sinks.push(config::SinkConfig {
            name: "stdout".into(),
            kind: "stdout".into(),
            table,
        });
    }
}

/// Load the configuration, or the defaults when there is no file. `Err(code)` after printing.
pub fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(p) => config::load(p).map_err(|e| {
            eprintln!("armorwatch: configuration error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// The configured sources, or the automatic choice (printed with its reasons).
pub fn choose_sources(config: &Config) -> Vec<config::SourceConfig> {
    if !config.sources.is_empty() {
        return config.sources.clone();
    }
    let selection = sources::select(&sources::probe());
    eprintln!("armorwatch: no source configured; choosing automatically:");
    for r in &selection.reasons {
        eprintln!("  - {r}");
    }
    selection.sources
}

/// The state directory to use; without a config file an unwritable default is skipped (with a
/// warning) rather than fatal, so `armorwatch run` works for a quick look as any user.
pub fn state_dir(config: &Config, explicit: bool) -> Option<PathBuf> {
    if explicit {
        return Some(config.state_dir.clone());
    }
    // Existing is not enough: checkpoints and the lock are files created in it.
    let writable = std::fs::create_dir_all(&config.state_dir)
        .and_then(|()| tempfile::tempfile_in(&config.state_dir).map(drop));
    match writable {
        Ok(()) => Some(config.state_dir.clone()),
        Err(e) => {
            crate::log_warn!(
                "{}: {e}; running without checkpoints",
                config.state_dir.display()
            );
            None
        }
    }
}

/// Build a runtime, run the pipeline, map errors to exit codes (`replay`). When there is a state
/// directory the incident alerts are recorded there for `armorwatch status`.
pub fn execute(plan: Plan, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let _lock = match plan
        .state_dir
        .as_deref()
        .map(StateLock::acquire)
        .transpose()
    {
        Ok(lock) => lock,
        // Another process on the directory may end; one that cannot be written never works.
        Err(e @ crate::checkpoint::CheckpointError::Locked { .. }) => {
            eprintln!("armorwatch: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            eprintln!("armorwatch: configuration error: `state.dir`: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let metrics = Metrics::new();
    metrics.set_state_dir(plan.state_dir.as_deref());
    let outputs = {
        let _guard = runtime.enter();
        match crate::alerting::build_outputs_with(
            config,
            plan.mode,
            plan.state_dir.as_deref(),
            Some(metrics.clone()),
        ) {
            Ok(o) => o,
            // A full disk or EIO is no mistake of the configuration.
            Err(e) if e.is_transient() => {
                eprintln!("armorwatch: cannot start the outputs: {e}");
                return Ok(ExitCode::from(EXIT_IOERR));
            }
            Err(e) => {
                eprintln!("armorwatch: configuration error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
    };
    let mut all = outputs;
    all.push(Box::new(MetricsOutput::new(metrics, false)));
    let files = plan.files.clone();
    // Replay ends when the sources reach their end; a signal stops either mode early.
    let result = runtime.block_on(pipeline::run(plan, all, shutdown_signal()));
    match result {
        Ok(summary) => {
            eprintln!(
                "armorwatch: {} events delivered, {} duplicates dropped, {} loss notices",
                summary.events, summary.duplicates, summary.losses
            );
            // A read error ended a source before its end: the replay is not the whole input.
            let errors = sources::read_errors();
            if errors > 0 {
                eprintln!(
                    "armorwatch: replay incomplete: {errors} read error{} (above); what was read before {} was delivered",
                    if errors == 1 { "" } else { "s" },
                    if errors == 1 { "it" } else { "them" }
                );
                return Ok(ExitCode::from(EXIT_IOERR));
            }
            Ok(ExitCode::SUCCESS)
        }
        // A log file of the command line is no configuration: exit 2, as `parse` does.
        Err(pipeline::PipelineError::Source(sources::SourceError::Open {
            source_name,
            path,
            error,
        })) if source_name == "file" && files.contains(&path) => {
            eprintln!("armorwatch: cannot read {}: {error}", path.display());
            Ok(ExitCode::from(2))
        }
        // A configured source that cannot be opened: exit 78 with its key, as `run` does.
        Err(pipeline::PipelineError::Source(se)) => {
            eprintln!("armorwatch: configuration error: `{}`: {se}", se.key());
            Ok(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) => {
            eprintln!("armorwatch: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Read and validate a configuration completely: the file, every sink table (secrets
/// included) and the correlator's settings. The error names the key path.
pub fn load_validated(path: &Path, events: bool) -> Result<Config, String> {
    let mut config = config::load(path).map_err(|e| e.to_string())?;
    if events {
        events_to_stdout(&mut config);
    }
    crate::alerting::sink_specs(&config).map_err(|e| e.to_string())?;
    let host = config
        .host
        .clone()
        .unwrap_or_else(crate::alerting::host_name);
    crate::alerting::correlator_config(&config, &host).map_err(|e| e.to_string())?;
    Ok(config)
}

/// A reload keeps the state directory: the checkpoints, open incidents, sent-alert log and
/// outboxes are in the running one, and a new pipeline on another would start without them
/// (records written meanwhile skipped, open incidents opened again, undelivered alerts left
/// behind).
fn same_state_dir(config: Config, running: &Path) -> Result<Config, String> {
    if config.state_dir != running {
        return Err(format!(
            "`state.dir`: {} is not the running {}; changing it needs a restart \
             (systemctl restart armorwatch), after moving the directory's contents if they are to be kept",
            config.state_dir.display(),
            running.display()
        ));
    }
    Ok(config)
}

/// Why a pipeline ended.
#[derive(Debug)]
enum Outcome {
    /// SIGTERM/SIGINT (or the sources ended).
    Stop(&'static str),
    /// SIGHUP with a valid configuration.
    Reload(Box<Config>),
}

/// The signals the service handles, registered once for the whole process.
#[derive(Debug)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// A SIGTERM or SIGINT that arrived and was not handled yet (consumed).
    fn pending_stop(&mut self, runtime: &tokio::runtime::Runtime) -> Option<&'static str> {
        use std::task::{Context, Poll, Waker};
        let _guard = runtime.enter();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Some(())) = self.term.poll_recv(&mut cx) {
            return Some("SIGTERM");
        }
        if let Poll::Ready(Some(())) = self.int.poll_recv(&mut cx) {
            return Some("SIGINT");
        }
        None
    }
}

/// How far a pipeline got: a reloaded configuration whose pipeline fails before its sources
/// are open goes back to the previous one instead of ending the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The first configuration, not running yet.
    First,
    /// A reloaded configuration, not running yet.
    Reloaded,
    /// Its sources are open.
    Running,
}

/// What a SIGHUP reloads: the configuration file (None: nothing to reload), with `--events`,
/// and the state directory it must keep.
struct ReloadFrom<'a> {
    config_path: Option<&'a Path>,
    events: bool,
    running_state: &'a Path,
}

/// The pipeline's stop future: first polled once the sources are started (→ `READY=1`), ends
/// on SIGTERM/SIGINT or on SIGHUP with a valid configuration.
async fn until_stop_or_reload(
    signals: &mut Signals,
    metrics: &Metrics,
    reload: ReloadFrom<'_>,
    outcome: &mut Outcome,
    drain: &mut Option<DrainGuard>,
    start: &mut Start,
) {
    let ReloadFrom {
        config_path,
        events,
        running_state,
    } = reload;
    // First polled once the sources are open: a reload is applied only now.
    if *start == Start::Reloaded {
        metrics.reloaded(true);
    }
    *start = Start::Running;
    notify::ready(&metrics.status_line());
    tracing::info!("sources started; running");
    loop {
        tokio::select! {
            _ = signals.term.recv() => {
                *outcome = Outcome::Stop("SIGTERM");
                break;
            }
            _ = signals.int.recv() => {
                *outcome = Outcome::Stop("SIGINT");
                break;
            }
            _ = signals.hup.recv() => {
                let Some(path) = config_path else {
                    tracing::warn!("SIGHUP: running without a configuration file; nothing to reload");
                    continue;
                };
                notify::reloading();
                tracing::info!("SIGHUP: reloading {}", path.display());
                match load_validated(path, events).and_then(|c| same_state_dir(c, running_state)) {
                    Ok(c) => {
                        // The pings come from the pipeline's tick: the drain and the new
                        // pipeline's start must not outlast WatchdogSec from an old ping.
                        notify::keep_alive();
                        *outcome = Outcome::Reload(Box::new(c));
                        break;
                    }
                    Err(e) => {
                        metrics.reloaded(false);
                        tracing::error!(
                            "reload rejected, keeping the running configuration: {e}"
                        );
                        notify::ready(&metrics.status_line());
                    }
                }
            }
        }
    }
    // Stopping or reloading: alerts waiting for a compile check go out now.
    crate::profiles::check::stop_waiting();
    if let Outcome::Stop(signal) = outcome {
        notify::stopping();
        tracing::info!("{signal}: draining (bound {} s)", DRAIN_BOUND.as_secs());
    }
    *drain = Some(DrainGuard::arm());
}

/// Exits the process if a drain takes longer than [`DRAIN_BOUND`]; disarmed by dropping.
#[derive(Debug)]
struct DrainGuard {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl DrainGuard {
    fn arm() -> DrainGuard {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("drain-bound".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(DRAIN_BOUND)
                {
                    tracing::error!(
                        "draining took longer than {} s; exiting without finishing",
                        DRAIN_BOUND.as_secs()
                    );
                    std::process::exit(1);
                }
            });
        DrainGuard {
            done: spawned.ok().map(|_| tx),
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// A bind error that retrying will not cure: the address is not this host's
/// (EADDRNOTAVAIL) or the port is privileged and this user lacks CAP_NET_BIND_SERVICE (EACCES).
pub fn listen_never_works(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::PermissionDenied
    )
}

/// The metrics endpoint, rebound when a reload changes `metrics.listen`.
#[derive(Debug, Default)]
struct Endpoint {
    running: Option<Serving>,
}

/// A running metrics server: its address, its stop signal and its task.
#[derive(Debug)]
struct Serving {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a stopped metrics server may take to close its socket.
const ENDPOINT_STOP_WAIT: Duration = Duration::from_secs(2);

impl Endpoint {
    /// Where it serves (None: nowhere).
    fn addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    /// Stop the running server and wait until its socket is closed: the port is free on return
    /// (a reload going back to the previous configuration binds it again at once; the port
    /// was still held by the stopping server now and then, and the endpoint stayed on the
    /// rejected configuration's port).
    fn stop(&mut self, runtime: &tokio::runtime::Runtime) {
        if let Some(serving) = self.running.take() {
            let _ = serving.stop.send(true);
            let _ = runtime
                .block_on(async { tokio::time::timeout(ENDPOINT_STOP_WAIT, serving.task).await });
        }
    }

    /// Serve on `want` (None: stop). Errors leave the previous state in place.
    fn apply(
        &mut self,
        want: Option<SocketAddr>,
        metrics: &Arc<Metrics>,
        runtime: &tokio::runtime::Runtime,
    ) -> std::io::Result<()> {
        if self.addr() == want {
            return Ok(());
        }
        let Some(addr) = want else {
            self.stop(runtime);
            tracing::info!("metrics: endpoint stopped");
            return Ok(());
        };
        let std_listener = match std::net::TcpListener::bind(addr) {
            // The old endpoint may hold the port (0.0.0.0:9812 → 127.0.0.1:9812): free it first.
            // Only then: a port another process holds leaves the running endpoint alone.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && self.addr().is_some_and(|old| overlaps(old, addr)) =>
            {
                self.stop(runtime);
                std::net::TcpListener::bind(addr)?
            }
            other => other?,
        };
        std_listener.set_nonblocking(true)?;
        let bound = std_listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        self.stop(runtime);
        let (stop, rx) = watch::channel(false);
        let task = runtime.spawn(crate::metrics::serve(listener, metrics.clone(), rx));
        self.running = Some(Serving { addr, stop, task });
        tracing::info!("metrics: listening on http://{bound}/metrics and /healthz");
        Ok(())
    }
}

/// Two listen addresses that cannot be bound at once: one port, and one address or either of
/// them unspecified (`0.0.0.0`, `::`).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Run the subcommand.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let log = crate::logging::init();
    tracing::debug!("logging to {log}");
    // The signal handlers come first: until they are installed a SIGHUP (logrotate, a
    // `systemctl reload` racing a restart) terminates the process, and systemd counts death by
    // SIGHUP as a clean exit, so `Restart=on-failure` would not bring the service back. A
    // signal that arrives while the configuration is read waits for the running loop.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut signals = {
        let _guard = runtime.enter();
        Signals::new().context("installing signal handlers")?
    };
    let mut config = match args.config.as_deref() {
        None => Config::default(),
        Some(p) => match load_validated(p, false) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("configuration error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
    };
    if args.events {
        events_to_stdout(&mut config);
    }
    let metrics = Metrics::new();
    let mut endpoint = Endpoint::default();
    if let Err(e) = endpoint.apply(config.metrics_listen, &metrics, &runtime) {
        let addr = config
            .metrics_listen
            .map(|a| a.to_string())
            .unwrap_or_default();
        // An address not on this host, or a port this user may not bind, never works: a
        // configuration error (exit 78 stops `Restart=on-failure`); a port in use may free up.
        if listen_never_works(&e) {
            tracing::error!("configuration error: `metrics.listen`: cannot listen on {addr}: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        tracing::error!("metrics.listen: cannot listen on {addr}: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let mut previous: Option<Config> = None;
    let mut lock: Option<StateLock> = None;
    let mut endpoint_before_reload: Option<Option<SocketAddr>> = None;
    loop {
        // A reload moves the endpoint to its configuration's address (when it can be bound);
        // going back to the previous configuration puts it back where it was.
        let want = if previous.is_some() {
            endpoint_before_reload = Some(endpoint.addr());
            config.metrics_listen
        } else {
            match endpoint_before_reload.take() {
                Some(before) => before,
                None => endpoint.addr(),
            }
        };
        if let Err(e) = endpoint.apply(want, &metrics, &runtime) {
            tracing::error!(
                "metrics.listen: cannot listen on {want:?}: {e}; the endpoint stays where it was"
            );
        }
        let mut fallback = previous.take();
        let mut start = if fallback.is_some() {
            Start::Reloaded
        } else {
            Start::First
        };
        let sources = if config.sources.is_empty() {
            let selection = sources::select(&sources::probe());
            tracing::info!("no source configured; choosing automatically:");
            for r in &selection.reasons {
                tracing::info!("  - {r}");
            }
            selection.sources
        } else {
            config.sources.clone()
        };
        if sources.is_empty() {
            if let Some(old) = fallback.take() {
                metrics.reloaded(false);
                tracing::error!(
                    "reload failed, going back to the previous configuration: no readable source; see `armorwatch doctor`"
                );
                config = old;
                continue;
            }
            tracing::error!("no readable source; see `armorwatch doctor`");
            return Ok(ExitCode::FAILURE);
        }
        let state = state_dir(&config, args.config.is_some());
        if let Some(dir) = state
            .as_deref()
            .filter(|d| lock.as_ref().is_none_or(|l| l.dir() != *d))
        {
            match StateLock::acquire(dir) {
                Ok(l) => lock = Some(l),
                Err(e) => match fallback.take() {
                    // Another armorwatch holds it: not the configuration's fault.
                    None if matches!(e, crate::checkpoint::CheckpointError::Locked { .. }) => {
                        tracing::error!("{e}");
                        return Ok(ExitCode::FAILURE);
                    }
                    // One that cannot be created or written: what check-config calls a
                    // configuration error, and the same exit (the unit does not restart it).
                    None => {
                        tracing::error!("configuration error: `state.dir`: {e}");
                        return Ok(ExitCode::from(EXIT_CONFIG));
                    }
                    Some(old) => {
                        metrics.reloaded(false);
                        tracing::error!(
                            "reload failed, going back to the previous configuration: {e}"
                        );
                        config = old;
                        continue;
                    }
                },
            }
        }
        metrics.set_state_dir(state.as_deref());
        let plan = Plan {
            mode: Mode::Follow,
            sources,
            files: Vec::new(),
            state_dir: state.clone(),
            checkpoint_interval: config.checkpoint_interval,
        };
        let built = {
            let _guard = runtime.enter();
            crate::alerting::build_outputs_with(
                &config,
                Mode::Follow,
                state.as_deref(),
                Some(metrics.clone()),
            )
        };
        let outputs = match (built, fallback.take()) {
            (Ok(o), old) => {
                fallback = old;
                o
            }
            // A full disk or EIO may pass: exit 1, which systemd restarts (78 it does not).
            (Err(e), None) if e.is_transient() => {
                tracing::error!("cannot start the outputs: {e}");
                return Ok(ExitCode::FAILURE);
            }
            (Err(e), None) => {
                tracing::error!("configuration error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            (Err(e), Some(old)) => {
                metrics.reloaded(false);
                tracing::error!("reload failed, going back to the previous configuration: {e}");
                config = old;
                continue;
            }
        };
        // Last: its tick (watchdog, STATUS=) follows the others', its close saves what their
        // close produced.
        let mut all = outputs;
        all.push(Box::new(MetricsOutput::new(metrics.clone(), true)));
        let mut outcome = Outcome::Stop("end of input");
        let mut drain = None;
        let running_state = config.state_dir.clone();
        let result = runtime.block_on(async {
            let stop = until_stop_or_reload(
                &mut signals,
                &metrics,
                ReloadFrom {
                    config_path: args.config.as_deref(),
                    events: args.events,
                    running_state: &running_state,
                },
                &mut outcome,
                &mut drain,
                &mut start,
            );
            pipeline::run(plan, all, stop).await
        });
        drop(drain);
        match result {
            Ok(summary) => tracing::info!(
                "pipeline drained: {} events delivered, {} duplicates dropped, {} loss notices",
                summary.events,
                summary.duplicates,
                summary.losses
            ),
            Err(e) => match fallback.take().filter(|_| start == Start::Reloaded) {
                Some(old) => {
                    metrics.reloaded(false);
                    tracing::error!("reload failed, going back to the previous configuration: {e}");
                    config = old;
                    continue;
                }
                // A configured source that cannot be opened at the first start: what
                // check-config calls a configuration error, with its key and exit 78. An
                // automatic one was readable when probed a moment ago: a passing failure,
                // exit 1, which systemd restarts (78 it does not).
                None if start == Start::First => match &e {
                    pipeline::PipelineError::Source(se) if !config.sources.is_empty() => {
                        tracing::error!("configuration error: `{}`: {e}", se.key());
                        notify::stopping();
                        return Ok(ExitCode::from(EXIT_CONFIG));
                    }
                    _ => {
                        tracing::error!("{e}");
                        notify::stopping();
                        return Ok(ExitCode::FAILURE);
                    }
                },
                None => {
                    tracing::error!("{e}");
                    notify::stopping();
                    return Ok(ExitCode::FAILURE);
                }
            },
        }
        match outcome {
            Outcome::Stop(_) => break,
            Outcome::Reload(new) => {
                // A stop asked for during the drain is not kept waiting for the new pipeline to
                // start (and drain again): systemd kills at TimeoutStopSec.
                if let Some(signal) = signals.pending_stop(&runtime) {
                    tracing::info!(
                        "{signal} during the reload: stopping instead of starting the new pipeline"
                    );
                    notify::stopping();
                    break;
                }
                let new = *new;
                notify::keep_alive();
                tracing::info!("configuration reloaded; starting the new pipeline");
                previous = Some(std::mem::replace(&mut config, new));
            }
        }
    }
    tracing::info!("stopped");
    // Everything was drained; threads still blocked in a read (a source's inotify or journal
    // wait) need not be waited for.
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Without a configuration file, a default state directory that exists but cannot be
    /// written (the package's /var/lib/armorwatch, 0750 armorwatch, for another user) is
    /// skipped like one that cannot be created: it was used, the lock failed and `run` exited
    /// 78, a configuration error without a configuration. `/proc` cannot be written by root
    /// either.
    #[test]
    fn an_unwritable_default_state_directory_is_skipped() {
        let config = Config {
            state_dir: PathBuf::from("/proc"),
            ..Config::default()
        };
        assert_eq!(state_dir(&config, false), None);
        assert_eq!(state_dir(&config, true), Some(PathBuf::from("/proc")));
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: tmp.path().join("state"),
            ..Config::default()
        };
        assert_eq!(state_dir(&config, false), Some(tmp.path().join("state")));
    }
}
