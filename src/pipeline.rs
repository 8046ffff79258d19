//! Wires the stages: one task per source (reading) → one parser task per source → dedup and
//! output (one blocking thread) → checkpoints. Bounded channels throughout, so a slow output
//! slows the sources instead of growing memory.
//!
//! Delivery is at-least-once: a source's position is recorded only after the output accepted
//! every event read before it, and saved every `checkpoint_interval`; after a crash, whatever was
//! delivered since the last save is delivered again.
//!
//! Shutdown: the stop signal makes the sources return; each parser task then sees its input
//! close, emits what it still holds and closes its output; the output thread drains, flushes and
//! saves the checkpoints last.
//!
//! **Outputs.** [`EventOutput`] is how events and loss notices leave the pipeline.
//! [`JsonLines`] serves `content = "events"` file/stdout sinks synchronously (so a checkpoint
//! never passes an event that was not written); `crate::alerting::Alerting` feeds the correlator,
//! the explainer and the sinks. `crate::alerting::build_outputs` builds both from the config.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::SerializeStruct;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{CheckpointError, Checkpoints, Position};
use crate::config::SourceConfig;
use crate::event::{Event, Source, format_rfc3339_millis};
use crate::parse::line::LossReport;
use crate::parse::{Output, Parser};
use crate::sources::{self, SourceError};

/// How long a source must be quiet before the parser stops waiting for companion records
/// (SYSCALL, PROCTITLE …) of the events it holds. auditd writes an event's records back to back.
pub const IDLE_FLUSH: Duration = Duration::from_millis(2);

/// How long the parser waits for the next batch after one that ended with
/// [`SourceItem::MoreFollows`] before it stops waiting for companions all the same.
pub const MORE_FOLLOWS_WAIT: Duration = Duration::from_secs(1);

/// Batches in flight between a source and its parser (4 and [`OUTPUT_CHANNEL`] 2 replay 1M
/// records as fast as 8 and 4, in 2–3 MiB less).
const SOURCE_CHANNEL: usize = 4;
/// Batches in flight between the parsers and the output. The output is the slower stage; more
/// batches only hold more events (a storm of 100k denials/s: 48 MiB peak with 16, 33–35 with 4,
/// 28–31 with 2, at the same speed).
const OUTPUT_CHANNEL: usize = 2;
/// Lines remembered while the parser holds events; beyond this the parser is flushed.
const MAX_TRACKED_LINES: usize = 4096;
/// Window for duplicates of records without an audit stamp.
const STAMPLESS_DEDUP_WINDOW: Duration = Duration::from_secs(2);
/// Stamped keys remembered for duplicate detection.
const DEDUP_KEYS: usize = 65_536;
/// Stamped keys saved with the checkpoints, for duplicates that straddle a restart.
const DEDUP_KEYS_SAVED: usize = 1024;

/// Follow live, or read to the current end and stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `armorwatch run`: follow until stopped; a source without a checkpoint starts at the end.
    Follow,
    /// `armorwatch replay`: from the checkpoint (or the beginning) to the current end.
    Replay,
}

/// One physical line (or journal entry message line) read by a source.
#[derive(Debug, Clone)]
pub struct SourceLine {
    /// The text, without its newline.
    pub text: String,
    /// Where it came from (goes into the event).
    pub source: Source,
    /// The source's position just after this line; None for sources without checkpoints.
    pub position: Option<Position>,
}

/// Consecutive lines of one file in one buffer: a reader of a busy file hands over hundreds at a
/// time, and one allocation for all of them instead of one per line is most of what reading
/// costs.
#[derive(Debug, Clone, Default)]
pub struct FileLines {
    /// The lines' text back to back, without newlines (invalid UTF-8 replaced).
    pub text: String,
    /// Each line: where it ends in `text`, its 1-based line number, the file offset after it.
    pub lines: Vec<FileLine>,
    /// The path shown in events (the rotated file's name while it is finished).
    pub shown: Arc<str>,
    /// For positions: the configured path and the file's (device, inode); None for files
    /// without checkpoints (command-line files).
    pub file: Option<(Arc<Path>, u64, u64)>,
}

/// One line of [`FileLines`].
#[derive(Debug, Clone, Copy)]
pub struct FileLine {
    /// End of the line in [`FileLines::text`] (its start is the previous line's end).
    pub end: usize,
    /// 1-based line number.
    pub line: u64,
    /// Bytes of the file consumed after this line.
    pub offset: u64,
    /// The line's fingerprint, for the position after it.
    pub print: crate::checkpoint::LinePrint,
}

impl FileLines {
    /// Each line as (text, source, position).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Source, Option<Position>)> + '_ {
        let mut start = 0;
        self.lines.iter().map(move |l| {
            let text = &self.text[start..l.end];
            start = l.end;
            let source = Source::File {
                path: self.shown.clone(),
                line: l.line,
            };
            let position = self.file.as_ref().map(|(path, dev, ino)| Position::File {
                path: path.clone(),
                dev: *dev,
                ino: *ino,
                offset: l.offset,
                line: l.line,
                last_line: Some(l.print),
            });
            (text, source, position)
        })
    }
}

/// What a source hands to its parser task.
#[derive(Debug, Clone)]
pub enum SourceItem {
    /// A line to parse.
    Line(SourceLine),
    /// Lines of a file to parse.
    FileLines(FileLines),
    /// A loss the source detected itself (kmsg overwrite, netlink serial gap …).
    Loss(LossEvent),
    /// The source moved past input that holds nothing to parse (skipped journal entries).
    Position(Position),
    /// Ends a batch the source cut short because it was full: more input is already there. The
    /// parser then waits for the next batch (up to [`MORE_FOLLOWS_WAIT`]) instead of giving up
    /// on its events' companions after [`IDLE_FLUSH`]: a reader delayed a few milliseconds while
    /// catching up (a replay, a backlog) would otherwise split an AVC record from its SYSCALL
    /// and PROCTITLE, and the event would go out without its process.
    MoreFollows,
}

/// A batch of items; sources batch to keep channel overhead low.
pub type Batch = Vec<SourceItem>;

/// A source's side of [`SourceItem::MoreFollows`]: after a batch that ended with it, the next
/// batch goes out even when empty, to tell the parser the reader has caught up (else a follower
/// would leave the parser waiting [`MORE_FOLLOWS_WAIT`] for companions that are not coming).
#[derive(Debug, Default)]
pub struct CutShort {
    last_was_cut: bool,
}

impl CutShort {
    /// Whether `batch` is to be sent (it holds something, or it is the empty one that follows a
    /// cut batch); remembers whether it ends with [`SourceItem::MoreFollows`].
    pub fn should_send(&mut self, batch: &Batch) -> bool {
        let send = !batch.is_empty() || self.last_was_cut;
        self.last_was_cut = matches!(batch.last(), Some(SourceItem::MoreFollows));
        send
    }
}

/// Sender half given to a source.
pub type BatchSender = mpsc::Sender<Batch>;

/// The stop signal sources watch (true = stop).
pub type StopSignal = watch::Receiver<bool>;

/// Why records were lost (`"kind": "loss"` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// `kauditd_printk_skb: N callbacks suppressed` (printk rate limit).
    PrintkSuppressed,
    /// `audit_lost=N`: the kernel's running total of lost records.
    AuditLost,
    /// `audit: backlog limit exceeded`.
    BacklogExceeded,
    /// /dev/kmsg records overwritten before they were read.
    KmsgOverwritten,
    /// A gap in audit serials on the netlink socket.
    NetlinkSerialGap,
    /// The netlink socket's receive buffer overflowed (ENOBUFS).
    NetlinkOverrun,
    /// An AppArmor-looking line armorwatch could not parse.
    Unparsed,
}

/// A loss notice (`"kind": "loss"`, schema 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossEvent {
    /// Why.
    pub reason: LossReason,
    /// How many records, when known.
    pub count: Option<u64>,
    /// Details (parse error, the kernel's text …).
    pub detail: Option<String>,
    /// Where it was noticed.
    pub source: Source,
    /// When armorwatch noticed it (Unix milliseconds).
    pub noticed_ms: u64,
}

impl LossEvent {
    /// A notice stamped with the current time.
    pub fn now(
        reason: LossReason,
        count: Option<u64>,
        detail: Option<String>,
        source: Source,
    ) -> LossEvent {
        let noticed_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        LossEvent {
            reason,
            count,
            detail,
            source,
            noticed_ms,
        }
    }
}

impl Serialize for LossEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("LossEvent", 7)?;
        s.serialize_field("schema", &crate::event::EVENT_SCHEMA)?;
        s.serialize_field("kind", "loss")?;
        s.serialize_field(
            "time",
            &format_rfc3339_millis(self.noticed_ms / 1000, (self.noticed_ms % 1000) as u32),
        )?;
        s.serialize_field("reason", &self.reason)?;
        s.serialize_field("count", &self.count)?;
        s.serialize_field("detail", &self.detail)?;
        s.serialize_field("source", &self.source)?;
        s.end()
    }
}

/// What the pipeline hands to the output.
#[derive(Debug, Clone)]
pub enum Item {
    /// An AppArmor event.
    Event(Arc<Event>),
    /// Records were lost.
    Loss(LossEvent),
}

impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Event(e) => e.serialize(serializer),
            Item::Loss(l) => l.serialize(serializer),
        }
    }
}

/// **The output boundary.** Everything that leaves the pipeline goes through this trait; the
/// sinks module and the correlator implement it. `deliver` returning `Ok` means "accepted": the
/// pipeline may then advance the checkpoint past the item. It is called from one dedicated
/// thread, in order, so implementations may block (write, fsync, queue to a spool).
pub trait EventOutput: Send + std::fmt::Debug {
    /// Accept one item. An error is retried (the checkpoint does not advance meanwhile).
    fn deliver(&mut self, item: &Item) -> io::Result<()>;
    /// Called about once a second whatever the input, so time-driven work (closing quiet
    /// incidents, persisting state) happens without events.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Called just before the source checkpoints are saved, and while no position is unsaved:
    /// make everything accepted so far durable (queued lines written, state persisted), so a
    /// crash after the save loses nothing. `generation` is the checkpoints' generation this
    /// state belongs to ([`Checkpoints::next_generation`] before a save,
    /// [`Checkpoints::generation`] otherwise): state kept by an output is restored only together
    /// with the positions it matches.
    fn persist(&mut self, generation: u64) -> io::Result<()> {
        let _ = generation;
        Ok(())
    }
    /// Called after each batch of items, before their positions count as delivered: hand on
    /// what [`EventOutput::deliver`] held back to write (or queue) once per batch. An error is
    /// retried like one of `deliver`.
    fn end_batch(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Called at shutdown after the last item.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Built-in output: one JSON object per line (events schema 1 and loss notices), written as
/// whole lines once per batch (see [`JsonLines::write_pending`]), to standard output or appended
/// to a file, with the characters a terminal acts on escaped
/// ([`crate::sinks::escape::json_for_terminal`]).
#[derive(Debug)]
pub struct JsonLines {
    writer: Box<dyn WriteDebug>,
    /// Whole lines not written yet (after a failed write: the part not written).
    pending: Vec<u8>,
}

/// [`JsonLines`] writes at the end of a batch, or before a line would take its buffer past this.
const JSON_LINES_BUFFER: usize = 256 * 1024;

/// `Write + Send + Debug`, so the output can be printed in diagnostics.
pub trait WriteDebug: Write + Send + std::fmt::Debug {}
impl<T: Write + Send + std::fmt::Debug> WriteDebug for T {}

impl JsonLines {
    /// Write to standard output.
    pub fn stdout() -> JsonLines {
        JsonLines {
            writer: Box::new(io::stdout()),
            pending: Vec::new(),
        }
    }

    /// Append to a file (created, with its directory, if missing). A last line left torn by a
    /// crash is ended first, so the next line is not glued to it.
    pub fn file(path: &Path) -> io::Result<JsonLines> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        Ok(JsonLines {
            writer: Box::new(FollowedFile::open(path)?),
            pending: Vec::new(),
        })
    }
}

/// A file appended to by path: moved away (logrotate) or removed, the next batch goes to a new
/// file at the path, as the alert file sink does. Checked only between whole lines.
#[derive(Debug)]
struct FollowedFile {
    path: PathBuf,
    file: std::fs::File,
    id: (u64, u64),
    /// The last write ended a line.
    at_line_start: bool,
}

impl FollowedFile {
    fn open(path: &Path) -> io::Result<FollowedFile> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        // A last line left torn by a crash is ended first, so the next is not glued to it.
        crate::sinks::file::end_torn_line(&mut file)?;
        let m = file.metadata()?;
        Ok(FollowedFile {
            path: path.to_path_buf(),
            file,
            id: (m.dev(), m.ino()),
            at_line_start: true,
        })
    }

    fn moved_away(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != self.id)
    }
}

impl Write for FollowedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.at_line_start && self.moved_away() {
            *self = FollowedFile::open(&self.path)?;
        }
        let n = self.file.write(buf)?;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl JsonLines {
    /// Write what is pending. Whole lines per `write`, so a kill -9 leaves whole lines (or, at
    /// worst, one torn last line); after an error only the part not written stays pending, so a
    /// retry neither repeats nor tears a line.
    fn write_pending(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.pending.len() {
            match self.writer.write(&self.pending[done..]) {
                Ok(0) => {
                    self.pending.drain(..done);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pending.drain(..done);
                    return Err(e);
                }
            }
        }
        self.pending.clear();
        self.writer.flush()
    }
}

impl EventOutput for JsonLines {
    fn deliver(&mut self, item: &Item) -> io::Result<()> {
        // Room first: a failed write leaves the item out, and the retry adds it once.
        if self.pending.len() >= JSON_LINES_BUFFER {
            self.write_pending()?;
        }
        // Files and stdout are followed in terminals: characters a terminal acts on (C1
        // controls, DEL, bidi overrides) as `\uXXXX`, the same JSON value.
        crate::sinks::escape::push_json_line(&mut self.pending, item)?;
        Ok(())
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.write_pending()
    }

    fn persist(&mut self, _generation: u64) -> io::Result<()> {
        self.write_pending()
    }

    fn close(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

/// What to run.
#[derive(Debug)]
pub struct Plan {
    /// Follow or replay.
    pub mode: Mode,
    /// The sources (configured or automatically selected).
    pub sources: Vec<SourceConfig>,
    /// Replay only: files read whole, format detected per line, no checkpoint.
    pub files: Vec<PathBuf>,
    /// Checkpoints; None runs without (nothing is read from or saved to disk).
    pub state_dir: Option<PathBuf>,
    /// How often positions are saved while events flow.
    pub checkpoint_interval: Duration,
}

/// Counts reported at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events delivered.
    pub events: u64,
    /// Events dropped as duplicates of one already delivered.
    pub duplicates: u64,
    /// Loss notices delivered.
    pub losses: u64,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A source could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state directory is unusable.
    #[error("checkpoints: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The output failed and the pipeline was stopped before it recovered.
    #[error("output: {0}")]
    Output(io::Error),
    /// A followed source ended by itself (a read error it cannot go on after, a device at its
    /// end): what it delivered is saved, and the service manager restarts the daemon.
    #[error(
        "source {0} ended while following; stopped so that the service manager starts armorwatch again"
    )]
    SourceEnded(Arc<str>),
}

/// A parsed item plus the source position it completes, sent to the output thread.
#[derive(Debug)]
struct Delivery {
    source: Arc<str>,
    item: Option<Item>,
    ack: Option<Position>,
    /// An event's duplicate-filter key, hashed by the parse stage so the output thread (the one
    /// stage every source shares) only looks it up.
    dedup: Option<DedupKey>,
}

/// How often outputs get [`EventOutput::tick`].
const TICK: Duration = Duration::from_secs(1);

/// The wait before the next checkpoint save after one failed: at least 1 s, doubling, at most
/// 60 s, never less than the configured interval.
fn save_backoff(current: Duration, configured: Duration) -> Duration {
    (current * 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
        .max(configured)
}

/// Run the pipeline until the sources end (replay) or `shutdown` resolves (follow), then drain.
pub async fn run(
    plan: Plan,
    mut outputs: Vec<Box<dyn EventOutput>>,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, PipelineError> {
    let mut checkpoints = match &plan.state_dir {
        Some(dir) => Some(Checkpoints::open(dir)?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<Delivery>>(OUTPUT_CHANNEL);
    let mut parser_tasks = Vec::new();
    let mut source_tasks = Vec::new();

    let mut starts: Vec<(Arc<str>, sources::Spec)> = Vec::new();
    for cfg in &plan.sources {
        if plan.mode == Mode::Replay && *cfg == SourceConfig::Netlink {
            crate::log_warn!("replay: the netlink source is live only; skipped");
            continue;
        }
        let name: Arc<str> = Arc::from(cfg.name());
        let position = checkpoints.as_ref().and_then(|c| c.get(&name).cloned());
        // Netlink's position only counts the records made while armorwatch was stopped. With
        // another source beside it (audit.log, journald, kmsg), that one reads them: a gap
        // would be a false loss at every restart.
        let position =
            position.filter(|_| *cfg != SourceConfig::Netlink || plan.sources.len() == 1);
        starts.push((
            name,
            sources::Spec::Configured {
                config: cfg.clone(),
                position,
            },
        ));
    }
    for file in &plan.files {
        let name: Arc<str> = Arc::from(format!("file:{}", file.display()));
        starts.push((name, sources::Spec::WholeFile { path: file.clone() }));
    }
    // Each source's end is reported: a followed source never ends before the stop unless it
    // failed, and the daemon must not run on without it (or, with none left, end "cleanly").
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Arc<str>>();
    for (name, spec) in starts {
        let (tx, rx) = mpsc::channel::<Batch>(SOURCE_CHANNEL);
        let handle = match sources::start(spec, plan.mode, tx, stop_rx.clone()) {
            Ok(h) => h,
            Err(e) => {
                // The sources started so far stop before the error is returned (their watchers
                // would otherwise hold the runtime open).
                let _ = stop_tx.send(true);
                for h in source_tasks {
                    let _ = h.await;
                }
                return Err(e.into());
            }
        };
        let ended = ended_tx.clone();
        let source = name.clone();
        source_tasks.push(tokio::spawn(async move {
            handle.join().await;
            let _ = ended.send(source);
        }));
        parser_tasks.push(tokio::spawn(parse_stage(name, rx, out_tx.clone())));
    }
    drop((out_tx, ended_tx));

    let configured_interval = plan.checkpoint_interval;
    let output = tokio::task::spawn_blocking(move || {
        // After a failed save the next waits longer (1 s doubling to 60 s), so a state
        // directory that cannot be written does not become a busy loop of warnings.
        let mut interval = configured_interval;
        let handle = tokio::runtime::Handle::current();
        let mut dedup = Dedup::default();
        if let Some(c) = &checkpoints {
            dedup.preload(c.recent());
        }
        let mut summary = Summary::default();
        let mut last_save = Instant::now();
        let mut last_tick = Instant::now();
        let mut failure = None;
        'outer: loop {
            let next = handle.block_on(async {
                let tick_left = TICK.saturating_sub(last_tick.elapsed());
                let left = if checkpoints.as_ref().is_some_and(Checkpoints::is_dirty) {
                    interval.saturating_sub(last_save.elapsed()).min(tick_left)
                } else {
                    tick_left
                };
                tokio::time::timeout(left, out_rx.recv()).await.ok()
            });
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                for o in &mut outputs {
                    if let Err(e) = o.tick() {
                        crate::log_warn!("output tick: {e}");
                    }
                }
                // What the tick changed (incidents closed by time) belongs to the saved positions
                // when none is pending.
                if let Some(c) = checkpoints.as_ref().filter(|c| !c.is_dirty()) {
                    persist_all(&mut outputs, c.generation());
                }
            }
            match next {
                None => {}
                Some(None) => break,
                Some(Some(batch)) => {
                    let now = Instant::now();
                    let mut acks = Vec::new();
                    for d in batch {
                        if let Some(item) = &d.item {
                            let duplicate = match item {
                                Item::Event(e) => {
                                    dedup.check(d.dedup.unwrap_or_else(|| DedupKey::of(e)), now)
                                }
                                Item::Loss(_) => false,
                            };
                            if duplicate {
                                summary.duplicates += 1;
                            } else {
                                if let Err(e) = deliver_all(&mut outputs, item) {
                                    failure = Some(e);
                                    break 'outer;
                                }
                                match item {
                                    Item::Event(_) => summary.events += 1,
                                    Item::Loss(_) => summary.losses += 1,
                                }
                            }
                        }
                        if let Some(pos) = d.ack {
                            acks.push((d.source, pos));
                        }
                    }
                    if let Err(e) = with_retries(&mut outputs, |o| o.end_batch()) {
                        failure = Some(e);
                        break 'outer;
                    }
                    if let Some(c) = checkpoints.as_mut() {
                        for (source, pos) in acks {
                            c.set(&source, pos);
                        }
                    }
                }
            }
            if let Some(c) = checkpoints.as_mut() {
                if c.is_dirty() && last_save.elapsed() >= interval {
                    // What the outputs accepted must be on disk before the positions move past
                    // it: when an output could not save it, they stay where they are.
                    let saved = if persist_all(&mut outputs, c.next_generation()) {
                        c.set_recent(dedup.recent(DEDUP_KEYS_SAVED));
                        c.save().map_err(|e| e.to_string())
                    } else {
                        Err(NOT_PERSISTED.to_owned())
                    };
                    match saved {
                        Ok(()) => interval = configured_interval,
                        Err(e) => {
                            interval = save_backoff(interval, configured_interval);
                            crate::log_warn!(
                                "saving checkpoints: {e}; trying again in {} s",
                                interval.as_secs()
                            );
                        }
                    }
                    last_save = Instant::now();
                }
            }
        }
        for o in &mut outputs {
            if let Err(e) = o.close() {
                crate::log_warn!("closing output: {e}");
            }
        }
        // Only what was accepted was acknowledged, so saving is right even after a failure.
        if let Some(c) = checkpoints.as_mut() {
            c.set_recent(dedup.recent(DEDUP_KEYS_SAVED));
            let generation = if c.is_dirty() {
                c.next_generation()
            } else {
                c.generation()
            };
            if !persist_all(&mut outputs, generation) {
                crate::log_warn!(
                    "saving checkpoints: {NOT_PERSISTED}; the next start reads again what came since the last save"
                );
            } else if let Err(e) = c.save() {
                crate::log_warn!("saving checkpoints: {e}");
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    });

    let mut output = std::pin::pin!(output);
    let mut shutdown = std::pin::pin!(shutdown);
    let follow = plan.mode == Mode::Follow;
    let mut source_ended = None;
    let early = tokio::select! {
        r = &mut output => Some(r),
        () = &mut shutdown => None,
        Some(name) = ended_rx.recv(), if follow => {
            source_ended = Some(name);
            None
        }
    };
    let _ = stop_tx.send(true);
    for h in source_tasks {
        let _ = h.await;
    }
    // Following, the output ends by itself only once every source has (before any stop): it
    // may have been seen first.
    if follow && early.is_some() && source_ended.is_none() {
        source_ended = Some(
            ended_rx
                .try_recv()
                .unwrap_or_else(|_| Arc::from("(every one)")),
        );
    }
    for t in parser_tasks {
        let _ = t.await;
    }
    let result = match early {
        Some(r) => r,
        None => output.await,
    };
    match (result, source_ended) {
        (Ok(Ok(_)), Some(name)) => Err(PipelineError::SourceEnded(name)),
        (Ok(Ok(summary)), None) => Ok(summary),
        (Ok(Err(e)), _) => Err(PipelineError::Output(e)),
        (Err(e), _) => Err(PipelineError::Output(io::Error::other(e.to_string()))),
    }
}

/// Why positions were not saved: see [`persist_all`].
const NOT_PERSISTED: &str =
    "not saved, an output could not make what it accepted durable (the positions stay before it)";

/// [`EventOutput::persist`] on every output; false when one failed (the positions must then not
/// move past what it accepted: a crash after their save would lose it).
fn persist_all(outputs: &mut [Box<dyn EventOutput>], generation: u64) -> bool {
    let mut all = true;
    for o in outputs.iter_mut() {
        if let Err(e) = o.persist(generation) {
            crate::log_warn!("output persist: {e}");
            all = false;
        }
    }
    all
}

fn deliver_all(outputs: &mut [Box<dyn EventOutput>], item: &Item) -> io::Result<()> {
    with_retries(outputs, |o| o.deliver(item))
}

/// `f` on every output, each retried a few times on error.
fn with_retries(
    outputs: &mut [Box<dyn EventOutput>],
    mut f: impl FnMut(&mut dyn EventOutput) -> io::Result<()>,
) -> io::Result<()> {
    for o in outputs.iter_mut() {
        let mut attempts = 0;
        loop {
            match f(o.as_mut()) {
                Ok(()) => break,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    crate::log_warn!("output failed ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(200 * attempts));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One source's parser: lines in, events out, with the position each event completes.
async fn parse_stage(
    name: Arc<str>,
    mut rx: mpsc::Receiver<Batch>,
    out: mpsc::Sender<Vec<Delivery>>,
) {
    let mut parser = Parser::new();
    let mut tracked: Tracked = VecDeque::new();
    let mut last_position: Option<Position> = None;
    let mut produced = Vec::new();
    let mut cap = UnparsedCap::default();
    let mut more_follows = false;
    loop {
        let next = if parser.has_pending() {
            let wait = if more_follows {
                MORE_FOLLOWS_WAIT
            } else {
                IDLE_FLUSH
            };
            tokio::time::timeout(wait, rx.recv()).await.ok()
        } else {
            Some(rx.recv().await)
        };
        let mut deliveries = Vec::new();
        match next {
            None => parser.flush_idle(&mut produced),
            Some(None) => {
                parser.finish(&mut produced);
                collect(&name, &mut produced, &mut tracked, &mut deliveries);
                cap.apply(&name, &mut deliveries, Instant::now(), true);
                if let Some(pos) = last_position.take() {
                    deliveries.push(Delivery {
                        source: name.clone(),
                        item: None,
                        ack: Some(pos),
                        dedup: None,
                    });
                }
                let _ = out.send(deliveries).await;
                return;
            }
            Some(Some(batch)) => {
                more_follows = false;
                for item in batch {
                    match item {
                        SourceItem::MoreFollows => more_follows = true,
                        SourceItem::Loss(loss) => {
                            collect(&name, &mut produced, &mut tracked, &mut deliveries);
                            deliveries.push(Delivery {
                                source: name.clone(),
                                item: Some(Item::Loss(loss)),
                                ack: None,
                                dedup: None,
                            });
                        }
                        SourceItem::Position(pos) => {
                            if parser.has_pending() {
                                tracked.push_back((None, pos.clone()));
                            }
                            last_position = Some(pos);
                        }
                        SourceItem::Line(line) => {
                            let line = (line.text.as_str(), line.source, line.position);
                            let state = (&mut parser, &mut tracked, &mut last_position);
                            parse_line(&name, state, line, &mut produced, &mut deliveries);
                        }
                        SourceItem::FileLines(lines) => {
                            for line in lines.iter() {
                                let state = (&mut parser, &mut tracked, &mut last_position);
                                parse_line(&name, state, line, &mut produced, &mut deliveries);
                            }
                        }
                    }
                }
            }
        }
        collect(&name, &mut produced, &mut tracked, &mut deliveries);
        cap.apply(&name, &mut deliveries, Instant::now(), false);
        if !parser.has_pending() {
            tracked.clear();
            if let Some(pos) = last_position.take() {
                deliveries.push(Delivery {
                    source: name.clone(),
                    item: None,
                    ack: Some(pos),
                    dedup: None,
                });
            }
        }
        if !deliveries.is_empty() && out.send(deliveries).await.is_err() {
            return;
        }
    }
}

/// What the parse stage tracks positions in: the positions of the lines read while the parser
/// holds events, and the last one.
type Tracked = VecDeque<(Option<Source>, Position)>;

/// Feed one line to the parser; its position is remembered while the parser holds events (an
/// event is acknowledged only with the position of its own first line).
fn parse_line(
    name: &Arc<str>,
    (parser, tracked, last_position): (&mut Parser, &mut Tracked, &mut Option<Position>),
    (text, source, position): (&str, Source, Option<Position>),
    produced: &mut Vec<Output>,
    deliveries: &mut Vec<Delivery>,
) {
    parser.push_line(text, &source, produced);
    if let Some(pos) = position {
        if parser.has_pending() {
            tracked.push_back((Some(source), pos.clone()));
        }
        *last_position = Some(pos);
    }
    collect(name, produced, tracked, deliveries);
    if tracked.len() > MAX_TRACKED_LINES {
        parser.flush_pending(produced);
        collect(name, produced, tracked, deliveries);
    }
}

/// Unparsed-line notices per source: at most [`UNPARSED_PER_WINDOW`] per
/// [`UNPARSED_WINDOW`]; the rest are counted and reported as one notice when the window ends
/// (or at shutdown), so a flood of garbage cannot flood the sinks.
#[derive(Debug, Default)]
struct UnparsedCap {
    window_start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
    first_suppressed: Option<LossEvent>,
}

/// Unparsed-line notices passed on per window and source.
const UNPARSED_PER_WINDOW: u32 = 10;
/// The window of [`UNPARSED_PER_WINDOW`].
const UNPARSED_WINDOW: Duration = Duration::from_secs(10);

impl UnparsedCap {
    /// Thin out the unparsed notices among `deliveries`; `force` reports what was held back.
    fn apply(
        &mut self,
        name: &Arc<str>,
        deliveries: &mut Vec<Delivery>,
        now: Instant,
        force: bool,
    ) {
        let window_over = self
            .window_start
            .is_none_or(|t| now.duration_since(t) >= UNPARSED_WINDOW);
        if window_over || force {
            self.report(name, deliveries);
            if window_over {
                self.window_start = Some(now);
                self.emitted = 0;
            }
        }
        deliveries.retain(|d| match &d.item {
            Some(Item::Loss(l)) if l.reason == LossReason::Unparsed => {
                if self.emitted < UNPARSED_PER_WINDOW {
                    self.emitted += 1;
                    true
                } else {
                    self.suppressed += 1;
                    if self.first_suppressed.is_none() {
                        self.first_suppressed = Some(l.clone());
                    }
                    false
                }
            }
            _ => true,
        });
        if force {
            self.report(name, deliveries);
        }
    }

    fn report(&mut self, name: &Arc<str>, deliveries: &mut Vec<Delivery>) {
        if let Some(mut first) = self.first_suppressed.take() {
            first.count = Some(self.suppressed);
            first.detail = Some(format!(
                "{} more unparsed lines (notices are capped at {UNPARSED_PER_WINDOW} per {} s); the first: {}",
                self.suppressed,
                UNPARSED_WINDOW.as_secs(),
                first.detail.unwrap_or_default()
            ));
            deliveries.push(Delivery {
                source: name.clone(),
                item: Some(Item::Loss(first)),
                ack: None,
                dedup: None,
            });
            self.suppressed = 0;
        }
    }
}

/// Turn parser outputs into deliveries. An event acknowledges the position of its own line:
/// the parser emits in input order, so every event before it has been handed over too.
fn collect(
    name: &Arc<str>,
    produced: &mut Vec<Output>,
    tracked: &mut VecDeque<(Option<Source>, Position)>,
    deliveries: &mut Vec<Delivery>,
) {
    for o in produced.drain(..) {
        let (item, ack, dedup) = match o {
            Output::Event(e) => {
                let ack = match tracked
                    .iter()
                    .position(|(s, _)| s.as_ref() == Some(&e.source))
                {
                    Some(i) => {
                        let mut taken = None;
                        for _ in 0..=i {
                            taken = tracked.pop_front();
                        }
                        taken.map(|(_, p)| p)
                    }
                    None => None,
                };
                let key = DedupKey::of(&e);
                (Item::Event(Arc::from(e)), ack, Some(key))
            }
            Output::Malformed(m) => {
                let mut line = m.line;
                truncate_utf8(&mut line, 512);
                let detail = format!("{}: {line}", m.reason);
                (
                    Item::Loss(LossEvent::now(
                        LossReason::Unparsed,
                        Some(1),
                        Some(detail),
                        m.source,
                    )),
                    None,
                    None,
                )
            }
            Output::Loss(l) => {
                let (reason, count) = match l.report {
                    LossReport::PrintkSuppressed(n) => (LossReason::PrintkSuppressed, Some(n)),
                    LossReport::AuditLost(n) => (LossReason::AuditLost, Some(n)),
                    LossReport::BacklogExceeded => (LossReason::BacklogExceeded, None),
                };
                (
                    Item::Loss(LossEvent::now(reason, count, None, l.source)),
                    None,
                    None,
                )
            }
        };
        deliveries.push(Delivery {
            source: name.clone(),
            item: Some(item),
            ack,
            dedup,
        });
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// Cross-source duplicate detection: the same record read through two channels (journald's
/// kernel and audit transports, audit.log and netlink) yields one event. Stamped records are
/// keyed by (stamp, serial, type, content) and their node; stamp-less ones by content within
/// [`STAMPLESS_DEDUP_WINDOW`]. Two different AppArmor records of one audit event share the stamp,
/// hence the content in the key.
///
/// The node: auditd with `name_format` set writes `node=HOST` into audit.log, netlink and
/// journald text has none, so a copy without a node matches a copy with any node. An aggregating
/// server's audit.log holds several nodes, whose serials are independent: copies with two
/// different nodes are two records, and a copy without a node (the local host's, from netlink)
/// stands for one node only: the first with a node that matches it claims it.
///
/// The last [`DEDUP_KEYS_SAVED`] stamped keys are saved with the checkpoints, so a record
/// delivered through a fast channel (netlink, kmsg) just before a restart is not delivered again
/// when journald brings it after the restart. The keys are `DefaultHasher` values (fixed keys):
/// stable for one build; after an upgrade to a Rust with another hasher (or to a build that
/// keys otherwise), at most those records would be delivered twice.
#[derive(Debug, Default)]
pub struct Dedup {
    stamped: HashSet<u64, foldhash::fast::RandomState>,
    stamped_order: VecDeque<u64>,
    stampless: HashMap<u64, Instant, foldhash::fast::RandomState>,
    stampless_order: VecDeque<(u64, Instant)>,
}

/// Derived from a stamped record's key (XOR with these, so the output thread hashes nothing):
/// "delivered from a copy without a node", "delivered from a copy with a node", "the copy
/// without a node was claimed by one with a node".
const SEEN_WITHOUT_NODE: u64 = 0x9e37_79b9_7f4a_7c15;
const SEEN_WITH_NODE: u64 = 0xc2b2_ae3d_27d4_eb4f;
const CLAIMED_BY_NODE: u64 = 0x1656_67b1_9e37_79f9;

impl Dedup {
    /// The keys of the last `n` stamped events, oldest first (saved across restarts).
    pub fn recent(&self, n: usize) -> Vec<u64> {
        let skip = self.stamped_order.len().saturating_sub(n);
        self.stamped_order.iter().skip(skip).copied().collect()
    }

    /// Remember keys saved by a previous run.
    pub fn preload(&mut self, keys: &[u64]) {
        for &k in keys {
            if self.stamped.insert(k) {
                self.stamped_order.push_back(k);
            }
        }
    }

    /// True when an equal event was seen before (and remembers this one otherwise).
    pub fn is_duplicate(&mut self, event: &Event, now: Instant) -> bool {
        self.check(DedupKey::of(event), now)
    }

    /// [`Dedup::is_duplicate`] with the key already computed.
    pub fn check(&mut self, key: DedupKey, now: Instant) -> bool {
        let DedupKey {
            hash: key,
            node,
            stamped,
        } = key;
        if stamped {
            return self.check_stamped(key, node);
        }
        while let Some(&(k, t)) = self.stampless_order.front() {
            if now.duration_since(t) <= STAMPLESS_DEDUP_WINDOW
                && self.stampless_order.len() <= DEDUP_KEYS
            {
                break;
            }
            self.stampless_order.pop_front();
            if self.stampless.get(&k) == Some(&t) {
                self.stampless.remove(&k);
            }
        }
        if let Some(&t) = self.stampless.get(&key) {
            if now.duration_since(t) <= STAMPLESS_DEDUP_WINDOW {
                return true;
            }
        }
        self.stampless.insert(key, now);
        self.stampless_order.push_back((key, now));
        false
    }

    /// `key` without the node, `node` the key with it (see [`Dedup`] for the rules).
    fn check_stamped(&mut self, key: u64, node: Option<u64>) -> bool {
        let without_node = key ^ SEEN_WITHOUT_NODE;
        let with_node = key ^ SEEN_WITH_NODE;
        let Some(node) = node else {
            if self.stamped.contains(&without_node) || self.stamped.contains(&with_node) {
                return true;
            }
            self.remember(without_node);
            return false;
        };
        if self.stamped.contains(&node) {
            return true;
        }
        let claimed = key ^ CLAIMED_BY_NODE;
        let duplicate = self.stamped.contains(&without_node) && !self.stamped.contains(&claimed);
        if duplicate {
            self.remember(claimed);
        }
        self.remember(node);
        self.remember(with_node);
        duplicate
    }

    fn remember(&mut self, key: u64) {
        if !self.stamped.insert(key) {
            return;
        }
        self.stamped_order.push_back(key);
        if self.stamped_order.len() > DEDUP_KEYS {
            if let Some(old) = self.stamped_order.pop_front() {
                self.stamped.remove(&old);
            }
        }
    }
}

/// The duplicate filter's key of an event: a hash of its content, its stamp when it has one, and
/// for a stamped record with a node, that hash with the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupKey {
    hash: u64,
    node: Option<u64>,
    stamped: bool,
}

impl DedupKey {
    /// The key of `event`.
    pub fn of(event: &Event) -> DedupKey {
        let mut h = DefaultHasher::new();
        event.kind.hash(&mut h);
        event.fields.hash(&mut h);
        event.outer.as_ref().hash(&mut h);
        match &event.audit {
            Some(stamp) if !stamp.is_zero() => {
                (stamp.epoch, stamp.millis, stamp.serial).hash(&mut h);
                let hash = h.finish();
                let node = stamp.node.as_ref().map(|node| {
                    let mut h = DefaultHasher::new();
                    (hash, node).hash(&mut h);
                    h.finish()
                });
                DedupKey {
                    hash,
                    node,
                    stamped: true,
                }
            }
            _ => DedupKey {
                hash: h.finish(),
                node: None,
                stamped: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failed_saves_back_off_from_1_s_to_60_s() {
        use super::{Duration, save_backoff};
        let zero = Duration::ZERO;
        let mut d = zero;
        let mut seen = Vec::new();
        for _ in 0..9 {
            d = save_backoff(d, zero);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Never more often than configured.
        assert_eq!(
            save_backoff(Duration::from_secs(1), Duration::from_secs(90)),
            Duration::from_secs(90)
        );
    }

    use super::*;
    use crate::parse::parse_text;

    fn event(line: &str) -> Box<Event> {
        match parse_text(line, &Source::Text).pop() {
            Some(Output::Event(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    /// An AVC record at the end of a batch the reader cut short waits for its SYSCALL in the
    /// next batch however late that comes (within [`MORE_FOLLOWS_WAIT`]); at the end of what
    /// the reader could read, it waits only [`IDLE_FLUSH`]. Time is tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_batch_cut_short_keeps_its_event_waiting_for_companions() {
        const AVC: &str = r#"type=AVC msg=audit(1700000000.123:45): apparmor="DENIED" operation="open" profile="p" name="/x" pid=7 comm="c" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#;
        const SYSCALL: &str = r#"type=SYSCALL msg=audit(1700000000.123:45): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=7 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="c" exe="/usr/bin/c" subj=p key=(null)"#;
        let line = |text: &str| {
            SourceItem::Line(SourceLine {
                text: text.into(),
                source: Source::Text,
                position: None,
            })
        };
        let (tx, rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(4);
        let stage = tokio::spawn(parse_stage("t".into(), rx, out_tx));
        let process_of = |batch: Vec<Delivery>| {
            let events: Vec<Arc<Event>> = batch
                .into_iter()
                .filter_map(|d| match d.item {
                    Some(Item::Event(e)) => Some(e),
                    _ => None,
                })
                .collect();
            assert_eq!(events.len(), 1, "{events:?}");
            events[0].process.clone()
        };

        // Cut short: 100 ms (50 x IDLE_FLUSH) without the next batch, and the event still waits.
        tx.send(vec![line(AVC), SourceItem::MoreFollows])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            out_rx.try_recv().is_err(),
            "flushed while more input was coming"
        );
        tx.send(vec![line(SYSCALL)]).await.unwrap();
        let process = process_of(out_rx.recv().await.unwrap());
        assert_eq!(
            process.and_then(|p| p.exe).as_deref(),
            Some("/usr/bin/c"),
            "the SYSCALL record was not merged"
        );

        // Cut short, then an empty batch (the reader caught up): the event goes out after
        // IDLE_FLUSH, not MORE_FOLLOWS_WAIT.
        let t0 = tokio::time::Instant::now();
        tx.send(vec![
            line(&AVC.replace(":45)", ":47)")),
            SourceItem::MoreFollows,
        ])
        .await
        .unwrap();
        tx.send(Vec::new()).await.unwrap();
        let process = process_of(out_rx.recv().await.unwrap());
        assert!(process.is_none(), "{process:?}");
        assert!(t0.elapsed() < MORE_FOLLOWS_WAIT, "{:?}", t0.elapsed());

        // Not cut short: after IDLE_FLUSH the event goes out without its process.
        let t0 = tokio::time::Instant::now();
        tx.send(vec![line(&AVC.replace(":45)", ":46)"))])
            .await
            .unwrap();
        let process = process_of(out_rx.recv().await.unwrap());
        assert!(process.is_none(), "{process:?}");
        assert!(t0.elapsed() < MORE_FOLLOWS_WAIT, "{:?}", t0.elapsed());

        drop(tx);
        stage.await.unwrap();
    }

    #[test]
    fn dedup_across_transports_and_stamps() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let k = event(
            "audit: type=1400 audit(1700000000.123:45): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x\" pid=1 comm=\"c\"",
        );
        let a = event(
            "type=1400 msg=audit(1700000000.123:45): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x\" pid=1 comm=\"c\"",
        );
        let other = event(
            "type=1400 msg=audit(1700000000.123:45): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/y\" pid=1 comm=\"c\"",
        );
        assert!(!d.is_duplicate(&k, t0));
        assert!(d.is_duplicate(&a, t0));
        assert!(!d.is_duplicate(&other, t0), "same serial, different record");
        let z = event(
            "audit: type=1400 audit(0000000000.000:0): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/z\" pid=1 comm=\"c\"",
        );
        assert!(!d.is_duplicate(&z, t0));
        assert!(d.is_duplicate(&z, t0 + Duration::from_millis(500)));
        let mut restarted = Dedup::default();
        restarted.preload(&d.recent(10));
        assert!(restarted.is_duplicate(&a, t0), "keys survive a restart");
        assert!(
            !d.is_duplicate(&z, t0 + Duration::from_secs(10)),
            "outside the window it is a new event"
        );
    }

    /// A USER_AVC first line whose continuation never comes (libapparmor's testcase_dbus_10)
    /// goes out once the source has been quiet past the companion wait, not when some unrelated
    /// line happens to arrive.
    #[tokio::test(start_paused = true)]
    async fn a_user_avc_without_its_continuation_is_not_held_forever() {
        const USER_AVC: &str = r#"Jun 20 17:57:06 ns1 kernel: [4835959.046111] audit: type=1107 audit(1561053426.749:186): pid=640 uid=103 auid=4294967295 ses=4294967295 msg='apparmor="ALLOWED" operation="dbus_method_call"  bus="system" path="/org/freedesktop/systemd1" interface="org.freedesktop.systemd1.Manager" member="LookupDynamicUserByName" mask="send" name="org.freedesktop.systemd1" pid=20596 label="/tmp/apparmor-2.8.0/tests/regression/apparmor/dbus_service" peer_pid=1 peer_label="unconfined""#;
        let (tx, rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(4);
        let stage = tokio::spawn(parse_stage("t".into(), rx, out_tx));
        let t0 = tokio::time::Instant::now();
        tx.send(vec![SourceItem::Line(SourceLine {
            text: USER_AVC.into(),
            source: Source::Text,
            position: None,
        })])
        .await
        .unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(60), out_rx.recv())
            .await
            .expect("the held line was never released")
            .unwrap();
        let events: Vec<&Arc<Event>> = batch
            .iter()
            .filter_map(|d| match &d.item {
                Some(Item::Event(e)) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(events.len(), 1, "{batch:?}");
        assert_eq!(events[0].field("member"), Some("LookupDynamicUserByName"));
        assert!(t0.elapsed() >= IDLE_FLUSH, "{:?}", t0.elapsed());
        assert!(t0.elapsed() < MORE_FOLLOWS_WAIT, "{:?}", t0.elapsed());
        drop(tx);
        stage.await.unwrap();
    }

    /// journald with both transports: the copy that goes out (the kernel one, first) has the
    /// process, which the SYSCALL records brought after both copies.
    #[test]
    fn dedup_delivers_a_journald_copy_with_its_process() {
        let input = "\
audit: type=1400 audit(1700000001.100:600): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/a\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
type=1400 msg=audit(1700000001.100:600): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/a\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
audit: type=1300 audit(1700000001.100:600): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 comm=\"x\" exe=\"/usr/bin/x\" subj=p key=(null)
type=1300 msg=audit(1700000001.100:600): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 comm=\"x\" exe=\"/usr/bin/x\" subj=p key=(null)
";
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for l in input.lines() {
            parser.push_line(l, &Source::Text, &mut out);
        }
        parser.finish(&mut out);
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let delivered: Vec<Box<Event>> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .filter(|e| !d.is_duplicate(e, t0))
            .collect();
        assert_eq!(delivered.len(), 1);
        let exe = delivered[0].process.as_ref().and_then(|p| p.exe.as_deref());
        assert_eq!(exe, Some("/usr/bin/x"), "{:?}", delivered[0].raw);
    }

    /// auditd with `name_format` set writes `node=HOST`; netlink and journald text has no node.
    /// A copy without a node is the same record as one with any node.
    #[test]
    fn dedup_a_missing_node_matches_any_node() {
        const BODY: &str = "msg=audit(1700000000.001:1): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"p\" name=\"/etc/x\" pid=10 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0";
        let with_node = event(&format!("node=web1 type=AVC {BODY}"));
        let without = event(&format!("type=1400 {BODY}"));
        let t0 = Instant::now();
        for (first, second) in [(&with_node, &without), (&without, &with_node)] {
            let mut d = Dedup::default();
            assert!(!d.is_duplicate(first, t0));
            assert!(d.is_duplicate(second, t0), "{:?}", second.raw);
            assert!(d.is_duplicate(first, t0));
            assert!(d.is_duplicate(second, t0));
        }
    }

    /// An aggregating server's audit.log holds records of several nodes; the same serial and
    /// text from two hosts are two records, with or without a node-less copy of one of them
    /// (the local host's, from netlink) before or after.
    #[test]
    fn dedup_keeps_the_same_record_from_two_nodes() {
        const BODY: &str = "type=AVC msg=audit(1700000000.001:1): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"p\" name=\"/etc/x\" pid=10 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0";
        let a = event(&format!("node=a {BODY}"));
        let b = event(&format!("node=b {BODY}"));
        let local = event(BODY);
        let t0 = Instant::now();

        let mut d = Dedup::default();
        assert!(!d.is_duplicate(&a, t0));
        assert!(!d.is_duplicate(&b, t0), "another node's record");
        assert!(d.is_duplicate(&a, t0));
        assert!(d.is_duplicate(&b, t0));
        assert!(d.is_duplicate(&local, t0), "the local copy of one of them");

        let mut d = Dedup::default();
        assert!(!d.is_duplicate(&local, t0));
        assert!(
            d.is_duplicate(&a, t0),
            "audit.log's copy of the netlink record"
        );
        assert!(!d.is_duplicate(&b, t0), "the node-less copy was a's");
        assert!(d.is_duplicate(&b, t0));
        assert!(d.is_duplicate(&local, t0));

        let mut d = Dedup::default();
        assert!(!d.is_duplicate(&a, t0));
        assert!(d.is_duplicate(&local, t0));
        assert!(!d.is_duplicate(&b, t0));
    }

    /// /dev/kmsg writes `\` as `\x5c`; netlink as it is. One record, one event.
    #[test]
    fn dedup_kmsg_and_netlink_copies_after_decoding() {
        let body = |bs: &str| {
            format!(
                "audit(1561053426.749:186): pid=640 uid=103 auid=4294967295 ses=4294967295 msg='apparmor=\"DENIED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/x\" interface=\"org.x\" member=\"A{bs}B\" mask=\"send\" name=\"org.x\" pid=20596 label=\"/x\" peer_pid=1 peer_label=\"unconfined\" exe=\"/usr/bin/dbus-daemon\" sauid=103 hostname=? addr=? terminal=?'"
            )
        };
        let kmsg = event(&format!("6,1234,5678,-;audit: type=1107 {}", body("\\x5c")));
        let netlink = event(&format!("type=1107 msg={}", body("\\")));
        let mut d = Dedup::default();
        let t0 = Instant::now();
        assert!(!d.is_duplicate(&kmsg, t0));
        assert!(d.is_duplicate(&netlink, t0), "{:?}", kmsg.fields);
    }

    #[test]
    fn unparsed_notices_are_capped_and_summed() {
        let name: Arc<str> = Arc::from("t");
        let notice = |i: u64| Delivery {
            source: name.clone(),
            item: Some(Item::Loss(LossEvent::now(
                LossReason::Unparsed,
                Some(1),
                Some(format!("bad {i}")),
                Source::Text,
            ))),
            ack: None,
            dedup: None,
        };
        let mut cap = UnparsedCap::default();
        let t0 = Instant::now();
        let mut d: Vec<Delivery> = (0..25).map(notice).collect();
        cap.apply(&name, &mut d, t0, false);
        assert_eq!(d.len(), UNPARSED_PER_WINDOW as usize);
        let mut d = vec![notice(99)];
        cap.apply(&name, &mut d, t0 + Duration::from_secs(1), false);
        assert!(d.is_empty(), "still capped within the window");
        let mut d = Vec::new();
        cap.apply(&name, &mut d, t0 + UNPARSED_WINDOW, false);
        let Some(Item::Loss(sum)) = &d[0].item else {
            panic!()
        };
        assert_eq!(sum.count, Some(16));
        assert!(sum.detail.as_deref().unwrap().contains("the first: bad 10"));
    }

    /// Takes `budget` bytes, then fails every write until refilled; records what it took.
    #[derive(Debug, Clone, Default)]
    struct Flaky(Arc<std::sync::Mutex<(Vec<u8>, usize)>>);

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            let n = buf.len().min(g.1);
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            g.1 -= n;
            g.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_write_per_batch_and_resume_a_failed_write_without_repeating() {
        let sink = Flaky::default();
        sink.0.lock().unwrap().1 = 100;
        let mut out = JsonLines {
            writer: Box::new(sink.clone()),
            pending: Vec::new(),
        };
        let line = "type=AVC msg=audit(1700000000.006:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x\" pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0";
        let items: Vec<Item> = (0..3).map(|_| Item::Event(event(line).into())).collect();
        for item in &items {
            out.deliver(item).unwrap();
        }
        assert!(
            sink.0.lock().unwrap().0.is_empty(),
            "held until the batch ends"
        );
        // The disk fills up in the middle of the first line, then has room again.
        assert!(out.end_batch().is_err());
        assert_eq!(sink.0.lock().unwrap().0.len(), 100);
        sink.0.lock().unwrap().1 = usize::MAX;
        out.end_batch().unwrap();
        let want: String = items
            .iter()
            .map(|i| serde_json::to_string(i).unwrap() + "\n")
            .collect();
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().0.clone()).unwrap(),
            want
        );
    }

    /// An events file moved away by logrotate is followed: the next batch goes to a new file
    /// at the path. It went on into the moved file for ever, so `events.jsonl` stayed empty
    /// after the first rotation (found by a review helper).
    #[test]
    fn an_events_file_moved_away_is_followed_by_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut out = JsonLines::file(&path).unwrap();
        let line = |n: u32| {
            format!(
                "type=AVC msg=audit(1700000000.006:{n}): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x{n}\" pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0"
            )
        };
        out.deliver(&Item::Event(event(&line(1)).into())).unwrap();
        out.end_batch().unwrap();
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        out.deliver(&Item::Event(event(&line(2)).into())).unwrap();
        out.end_batch().unwrap();
        let moved = std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(moved.contains("/x1") && !moved.contains("/x2"), "{moved}");
        assert!(new.contains("/x2") && !new.contains("/x1"), "{new}");
    }

    #[test]
    fn json_lines_are_safe_to_tail() {
        let sink = Flaky::default();
        sink.0.lock().unwrap().1 = usize::MAX;
        let mut out = JsonLines {
            writer: Box::new(sink.clone()),
            pending: Vec::new(),
        };
        let l = LossEvent {
            reason: LossReason::KmsgOverwritten,
            count: None,
            detail: Some("\u{9B}2J\u{7F}\u{202E}gnp.exe\u{2066} – é".into()),
            source: Source::Kmsg { seq: 9 },
            noticed_ms: 0,
        };
        let item = Item::Loss(l);
        out.deliver(&item).unwrap();
        out.end_batch().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().0.clone()).unwrap();
        assert!(
            !text.contains(['\u{9B}', '\u{7F}', '\u{202E}', '\u{2066}']),
            "{text:?}"
        );
        let back: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, serde_json::to_value(&item).unwrap());
    }

    /// An output that takes every item but cannot make it durable (its state directory is
    /// full): `persist` fails every time.
    #[derive(Debug, Default)]
    struct CannotPersist {
        delivered: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl EventOutput for CannotPersist {
        fn deliver(&mut self, _item: &Item) -> io::Result<()> {
            self.delivered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn persist(&mut self, _generation: u64) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    /// The positions are saved only once the outputs made what they accepted durable: an output
    /// that could not save its state (the correlator's incidents on a full disk) keeps them
    /// where they were, so the next start reads those records again. They were saved all the
    /// same, and a crash after it lost the incidents' counts of those records (found by a review
    /// helper).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn positions_are_not_saved_past_state_an_output_could_not_persist() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let state = dir.path().join("state");
        std::fs::write(
            &log,
            "type=AVC msg=audit(1700000000.006:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x\" pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n",
        )
        .unwrap();
        let output = CannotPersist::default();
        let delivered = output.delivered.clone();
        let plan = Plan {
            mode: Mode::Replay,
            sources: vec![SourceConfig::AuditLog { path: log }],
            files: Vec::new(),
            state_dir: Some(state.clone()),
            checkpoint_interval: Duration::ZERO,
        };
        let outputs: Vec<Box<dyn EventOutput>> = vec![Box::new(output)];
        run(plan, outputs, std::future::pending()).await.unwrap();
        assert_eq!(
            delivered.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the record was not read"
        );
        let saved = Checkpoints::open(&state).unwrap();
        assert_eq!(
            saved.get("audit_log"),
            None,
            "the position was saved past state that was not"
        );
    }

    #[test]
    fn loss_event_json() {
        let l = LossEvent {
            reason: LossReason::KmsgOverwritten,
            count: Some(3),
            detail: None,
            source: Source::Kmsg { seq: 9 },
            noticed_ms: 1_700_000_000_123,
        };
        let j = serde_json::to_string(&Item::Loss(l)).unwrap();
        assert_eq!(
            j,
            r#"{"schema":1,"kind":"loss","time":"2023-11-14T22:13:20.123Z","reason":"kmsg_overwritten","count":3,"detail":null,"source":{"kind":"kmsg","seq":9}}"#
        );
    }
}
