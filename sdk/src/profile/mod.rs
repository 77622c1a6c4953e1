//! A CPU profiler whose samples carry the labels and span of the task that was
//! running, written as pprof for `go tool pprof -tagfocus`.
//!
//! Threads that register ([`register_current_thread`]; for tokio, in
//! `on_thread_start`) are sampled most cheaply: while a [`Profiler`] runs, each
//! has its own CPU-time timer (`timer_create` on the thread's CPU clock, signal
//! delivered to that thread), so sampling does not saturate when many cores are
//! busy, and its stack bounds are known, so its frames are read directly.
//! Threads nobody registered are sampled with full stacks too: they get a CPU
//! timer as well (the profiler finds them in `/proc/self/task` every 100 ms), a
//! process-wide timer covers the ones born in between, and their stacks are
//! read with `process_vm_readv`, 2 KiB at a time (the top of their stack is
//! `pthread_self()`'s descriptor, or the `[stack]` mapping for the main thread;
//! an unmapped frame pointer ends the walk instead of faulting). Their samples
//! are weighed by the thread's own CPU clock, from the CPU it had when the
//! profile started, so nothing is counted twice and nothing it used before its
//! first signal is lost (what it uses after its last one is: under one period
//! per thread). Each
//! signal copies the thread's current [`Context`](crate::Context) labels and span
//! ids, so a tokio task keeps its labels whichever worker runs it.
//!
//! Linux only; elsewhere [`ProfilerBuilder::start`] returns an "unsupported" error.
//!
//! Build settings for readable profiles (both in this repository's workspace):
//! - **frame pointers**: `-C force-frame-pointers=yes` (e.g. in
//!   `.cargo/config.toml`: `[build] rustflags = ["-C", "force-frame-pointers=yes"]`).
//!   The handler unwinds by frame pointers; code built without them yields
//!   truncated stacks. The profiler notices: [`ProfileStats::truncated_samples`]
//!   counts them, and when more than 10 % of stacks are cut short the profile
//!   says so in a comment and a line on stderr (once per process). A few are cut
//!   short in any build, where prebuilt C code (glibc) is on the stack.
//! - **`debug = "limited"`** (or more) in the profile you run, e.g.
//!   `[profile.release] debug = "limited"`: DWARF then keeps linkage names, so
//!   inlined frames are named by their full path. With `"line-tables-only"`
//!   inlined frames carry short names (`poll`, `{closure#0}`); with no debug info
//!   at all, frames are named from the symbol table (no files, lines or inlined
//!   frames); a fully stripped binary yields addresses and its GNU build id, and
//!   `go tool pprof BINARY profile.pb.gz` names them from the unstripped binary.
//!
//! Frames are named by their demangled path without the hash
//! (`tokio::runtime::task::harness::Harness<T,S>::poll`); each mapping carries its
//! object's build id, and its `has_functions` / `has_filenames` /
//! `has_line_numbers` / `has_inline_frames` are set only when tracewire found
//! them for that object (false for a stripped one, which `go tool pprof` then
//! symbolizes).
//!
//! What it promises the process it samples:
//! - One profile runs at a time; a refused start ([`ProfileError::is_busy`], e.g. a
//!   second `/debug/pprof/profile` request) touches nothing of the running one.
//! - Once a profile has run, tracewire's SIGPROF handler stays installed for the
//!   life of the process: a signal still pending when a profile stops is ignored
//!   instead of terminating the process ("Profiling timer expired"). A SIGPROF
//!   handler installed before ours receives the signals that are not tracewire's.
//! - Nothing is lost silently: samples dropped on a full buffer and registered
//!   threads whose CPU timer could not be created (with the CPU they used) are in
//!   [`Profile::stats`] and written into the pprof output as comments and as
//!   `[tracewire: ...]` samples.
//! - `fork` is safe: it happens with the profiler's locks held, and the child
//!   starts with no profile running ([`is_running`] is `false` there). A child
//!   that goes on without `exec` may start its own profile where the platform
//!   allows creating threads after `fork` (POSIX does not promise it in a
//!   multi-threaded process; glibc mostly does).
//!
//! ```no_run
//! use std::time::Duration;
//! use tracewire::labels::{self, LabelSet};
//! use tracewire::profile::{self, Profiler};
//!
//! profile::register_current_thread().unwrap();
//! let profiler = Profiler::builder().with_frequency(100).start().unwrap();
//! labels::with_labels(&LabelSet::new([("worker", "purge")]), || {
//!     // ... burn CPU ...
//! });
//! let profile = profiler.stop().unwrap();
//! let mut out = std::fs::File::create("cpu.pb.gz").unwrap();
//! profile.write_pprof(&mut out).unwrap();
//! // go tool pprof -tagfocus worker=purge cpu.pb.gz
//! ```

mod custom;
pub mod pprof;
#[cfg(target_os = "linux")]
pub(crate) mod sampler;
mod symbol;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use custom::{custom_profiles, CustomProfile};
pub use symbol::{resolve, short_name, Frame};

use crate::labels::LabelSet;
use crate::trace::{Span, SpanId, Str, TraceId};

/// Which span ids samples carry as labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanIds {
    /// None: only user labels.
    None,
    /// The local root span (e.g. the server span of the request) and its name: one
    /// label value per request, which links samples to traces (the default).
    #[default]
    LocalRoot,
    /// The innermost span and its name.
    Every,
}

/// What `Context::with_span` records for the profiler: 0 nothing, 1 local root
/// names, 2 every span's name.
static SPAN_NAMES: AtomicU8 = AtomicU8::new(0);

/// The span name a new context holding `span` carries for the profiler, given the
/// name its parent context carried.
pub(crate) fn span_name_for(span: &Span, parent: Option<Arc<Str>>) -> Option<Arc<Str>> {
    match SPAN_NAMES.load(Ordering::Relaxed) {
        0 => None,
        1 => {
            let is_local_root = span
                .local_root_span_id()
                .is_some_and(|r| r == span.span_context().span_id());
            if is_local_root {
                span.name().map(Arc::new)
            } else {
                parent
            }
        }
        _ => span.name().map(Arc::new),
    }
}

/// Why the profiler could not start.
#[derive(Debug)]
pub struct ProfileError {
    message: String,
    source: Option<io::Error>,
}

impl ProfileError {
    fn new(message: impl Into<String>, source: Option<io::Error>) -> Self {
        ProfileError {
            message: message.into(),
            source,
        }
    }
    /// Whether another CPU profile is already running (one at a time per process).
    pub fn is_busy(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::AddrInUse)
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

#[cfg(target_os = "linux")]
impl From<sampler::OsError> for ProfileError {
    fn from(e: sampler::OsError) -> Self {
        ProfileError::new(e.0, Some(e.1))
    }
}

/// Registers the calling thread for full-stack sampling; it unregisters itself when
/// it exits. Idempotent. For tokio:
///
/// ```no_run
/// let rt = tokio::runtime::Builder::new_multi_thread()
///     .on_thread_start(|| { let _ = tracewire::profile::register_current_thread(); })
///     .on_thread_stop(tracewire::profile::unregister_current_thread)
///     .build()
///     .unwrap();
/// ```
pub fn register_current_thread() -> Result<(), ProfileError> {
    #[cfg(target_os = "linux")]
    {
        sampler::register_current().map_err(Into::into)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(unsupported())
    }
}

/// CPU time the calling thread has used (its `CLOCK_THREAD_CPUTIME_ID`); `None`
/// where unsupported. Handy to check a profile against what really ran.
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        Some(sampler::cpu_time(false))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// CPU time the whole process has used (`CLOCK_PROCESS_CPUTIME_ID`); `None` where
/// unsupported.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        Some(sampler::cpu_time(true))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// What one sample costs, per [`measure_sample_cost`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct SampleCost {
    /// The signal handler's body on a registered thread (walk, labels, ring).
    pub body: Duration,
    /// The kernel's delivery of one SIGPROF and the return from it.
    pub delivery: Duration,
    /// The walk of the same stack on a thread nobody registered (the stack
    /// read with `process_vm_readv`).
    pub unregistered_walk: Duration,
    /// The frames that walk found.
    pub unregistered_depth: usize,
}

/// Measures the sampler (for the benchmarks), on the calling thread. Starts and
/// stops a 1 Hz profile itself, so no other profile may be running.
#[doc(hidden)]
pub fn measure_sample_cost(iterations: u32) -> Result<SampleCost, ProfileError> {
    #[cfg(target_os = "linux")]
    {
        register_current_thread()?;
        let profiler = Profiler::builder().with_frequency(1).start()?;
        let (body, delivery, unregistered_walk, unregistered_depth) =
            sampler::measure_handler(iterations);
        drop(profiler);
        Ok(SampleCost {
            body,
            delivery,
            unregistered_walk,
            unregistered_depth,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = iterations;
        Err(unsupported())
    }
}

/// Whether a CPU profile is running in this process (always `false` in a child
/// just forked from a profiled process, and where unsupported). Creates no thread
/// and allocates nothing, so a forked child may call it before `exec`.
pub fn is_running() -> bool {
    #[cfg(target_os = "linux")]
    {
        sampler::is_claimed()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Unregisters the calling thread (it is then sampled only by the process-wide
/// timer). Idempotent.
pub fn unregister_current_thread() {
    #[cfg(target_os = "linux")]
    sampler::unregister_current();
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> ProfileError {
    ProfileError::new(
        "the tracewire CPU profiler is only supported on Linux",
        Some(io::Error::from(io::ErrorKind::Unsupported)),
    )
}

/// Configures a [`Profiler`].
#[derive(Clone, Copy, Debug)]
pub struct ProfilerBuilder {
    frequency: u32,
    span_ids: SpanIds,
}

impl Default for ProfilerBuilder {
    fn default() -> Self {
        ProfilerBuilder {
            frequency: 100,
            span_ids: SpanIds::LocalRoot,
        }
    }
}

impl ProfilerBuilder {
    /// Samples per second of CPU time per thread (default 100, at most 10000).
    pub fn with_frequency(mut self, hz: u32) -> Self {
        self.frequency = hz.clamp(1, 10_000);
        self
    }
    /// Which span ids samples carry (default [`SpanIds::LocalRoot`]).
    pub fn with_span_ids(mut self, span_ids: SpanIds) -> Self {
        self.span_ids = span_ids;
        self
    }
    /// Starts profiling. Fails if another CPU profile is running in this process
    /// ([`ProfileError::is_busy`]) or the platform is not supported.
    pub fn start(self) -> Result<Profiler, ProfileError> {
        Profiler::start(self)
    }
}

/// A running CPU profile. [`stop`](Profiler::stop) it to get the [`Profile`];
/// dropping it stops it too.
///
/// One profile runs at a time per process. A profile does not survive `fork`: a
/// forked child can start its own, and must `std::mem::forget` a `Profiler` it
/// inherited (dropping it there only reports an error).
pub struct Profiler {
    config: ProfilerBuilder,
    period: Duration,
    started: SystemTime,
    started_at: Instant,
    stop: Option<mpsc::Sender<()>>,
    collector: Option<JoinHandle<Aggregate>>,
    #[cfg(target_os = "linux")]
    counters: sampler::Started,
    pid: u32,
}

/// What a profile recorded and what it could not, so that no gap is silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileStats {
    /// Sampling periods the signal handler recorded (each sample weighs 1 + the
    /// timer expirations the kernel folded into its signal).
    pub recorded_samples: u64,
    /// Sampling periods lost because the sample buffer was full.
    pub dropped_samples: u64,
    /// Registered threads whose CPU timer could not be created (e.g. `timer_create`
    /// failing with EAGAIN under `RLIMIT_SIGPENDING`): they were not sampled.
    pub unsampled_threads: u64,
    /// CPU time those threads used while not sampled.
    pub unsampled_cpu: Duration,
    /// Sampling periods of registered threads, whose stacks are walked.
    pub walked_samples: u64,
    /// Of those, the ones whose stack was cut short: code built without frame
    /// pointers was running or on the stack (build with
    /// `-C force-frame-pointers=yes`; see the [module docs](self)).
    pub truncated_samples: u64,
}

impl fmt::Debug for Profiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profiler")
            .field("config", &self.config)
            .field("started", &self.started)
            .finish()
    }
}

#[derive(Hash, PartialEq, Eq)]
struct Key {
    stack: Vec<usize>,
    labels: LabelSet,
    trace_id: u128,
    span_id: u64,
    span_name: Option<Arc<Str>>,
}

#[derive(Default)]
struct Aggregate {
    samples: HashMap<Key, u64>,
    /// Periods whose stacks were walked (registered threads), and of those, the
    /// ones whose walk was cut short by code without frame pointers.
    walked: u64,
    truncated: u64,
}

impl Profiler {
    /// A builder.
    pub fn builder() -> ProfilerBuilder {
        ProfilerBuilder::default()
    }

    #[cfg(not(target_os = "linux"))]
    fn start(_config: ProfilerBuilder) -> Result<Profiler, ProfileError> {
        Err(unsupported())
    }

    #[cfg(target_os = "linux")]
    fn start(config: ProfilerBuilder) -> Result<Profiler, ProfileError> {
        let period = Duration::from_nanos(1_000_000_000 / u64::from(config.frequency));
        // Claims the sampler first: a refused start touches nothing.
        let counters = sampler::start(period)?;
        SPAN_NAMES.store(
            match config.span_ids {
                SpanIds::None => 0,
                SpanIds::LocalRoot => 1,
                SpanIds::Every => 2,
            },
            Ordering::Relaxed,
        );
        let (tx, rx) = mpsc::channel::<()>();
        let span_ids = config.span_ids;
        let epoch = counters.epoch as u32;
        let collector = std::thread::Builder::new()
            .name("tracewire-profiler".into())
            .spawn(move || collect(rx, span_ids, epoch))
            .map_err(|e| {
                SPAN_NAMES.store(0, Ordering::Relaxed);
                sampler::stop();
                sampler::release_claim();
                ProfileError::new("cannot start the profiler thread", Some(e))
            })?;
        Ok(Profiler {
            config,
            period,
            started: SystemTime::now(),
            started_at: Instant::now(),
            stop: Some(tx),
            collector: Some(collector),
            counters,
            pid: std::process::id(),
        })
    }

    /// What the running profile has recorded so far, and what it could not.
    pub fn stats(&self) -> ProfileStats {
        #[cfg(target_os = "linux")]
        {
            stats_of(&sampler::counts(&self.counters))
        }
        #[cfg(not(target_os = "linux"))]
        {
            ProfileStats::default()
        }
    }

    /// Stops profiling and returns what was sampled. Fails only if the profiler's
    /// collector thread panicked (its samples are then released, not leaked) or in
    /// a forked child that inherited this profile.
    pub fn stop(mut self) -> Result<Profile, ProfileError> {
        self.finish()
    }

    #[cfg(not(target_os = "linux"))]
    fn finish(&mut self) -> Result<Profile, ProfileError> {
        Err(unsupported())
    }

    #[cfg(target_os = "linux")]
    fn finish(&mut self) -> Result<Profile, ProfileError> {
        let collector = self.collector.take();
        if self.pid != std::process::id() {
            // A copy inherited through fork: its collector thread is not in this
            // process, and the sampler here is not ours.
            std::mem::forget(collector);
            return Err(ProfileError::new(
                "this CPU profile was started by the parent process (before fork)",
                None,
            ));
        }
        SPAN_NAMES.store(0, Ordering::Relaxed);
        // Every sample of this profile is in the ring once `stop` returns; the
        // collector's last drain takes them all. The sampler stays claimed until
        // then, so no other profile can start and consume them.
        sampler::stop();
        drop(self.stop.take());
        let joined = collector.map(JoinHandle::join);
        let counts = sampler::counts(&self.counters);
        let agg = match joined {
            Some(Ok(agg)) => agg,
            _ => {
                // SAFETY: each popped sample's counts are released once.
                sampler::drain(|s| unsafe { sampler::release(&s.slot) });
                sampler::release_claim();
                return Err(ProfileError::new(
                    "the profiler's collector thread panicked",
                    None,
                ));
            }
        };
        sampler::release_claim();
        let mut stats = stats_of(&counts);
        stats.walked_samples = agg.walked;
        stats.truncated_samples = agg.truncated;
        warn_if_truncated(&stats);
        let failure = counts.first_failure.map(|e| e.to_string());
        let period = self.period;
        let samples = agg
            .samples
            .into_iter()
            .map(|(k, count)| Sample {
                stack: k.stack,
                labels: k.labels,
                trace_id: (k.trace_id != 0).then(|| TraceId::from_u128(k.trace_id)),
                span_id: (k.span_id != 0).then(|| SpanId::from_u64(k.span_id)),
                span_name: k.span_name,
                count,
                cpu: period * count as u32,
            })
            .collect();
        Ok(Profile {
            samples,
            period,
            start: self.started,
            duration: self.started_at.elapsed(),
            stats,
            timer_failure: failure,
        })
    }
}

#[cfg(target_os = "linux")]
fn stats_of(c: &sampler::Counts) -> ProfileStats {
    ProfileStats {
        recorded_samples: c.written,
        dropped_samples: c.dropped,
        unsampled_threads: c.timer_failures,
        unsampled_cpu: c.unsampled_cpu,
        walked_samples: 0,
        truncated_samples: 0,
    }
}

/// Whether more than 10 % of a profile's walked stacks were cut short. A few
/// always are, whatever the build: stacks through prebuilt C code (glibc is built
/// without frame pointers; the demo: 13 of 1,167 samples). Code built without
/// them cuts nearly every stack short.
fn mostly_truncated(stats: &ProfileStats) -> bool {
    stats.truncated_samples * 10 > stats.walked_samples
}

/// Says once per process, on stderr, that stacks are being cut short.
fn warn_if_truncated(stats: &ProfileStats) {
    static WARNED: AtomicU8 = AtomicU8::new(0);
    if mostly_truncated(stats) && WARNED.swap(1, Ordering::Relaxed) == 0 {
        eprintln!(
            "tracewire: {} of {} CPU samples had truncated stacks: code built without frame \
             pointers; build with RUSTFLAGS=\"-C force-frame-pointers=yes\" for whole stacks",
            stats.truncated_samples, stats.walked_samples
        );
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.collector.is_some() {
            let _ = self.finish();
        }
    }
}

/// The collector thread: drains the sample ring every few milliseconds and
/// aggregates identical samples of profile `epoch`, off the signal path. It is
/// the ring's only consumer while the profile runs.
#[cfg(target_os = "linux")]
fn collect(stop: mpsc::Receiver<()>, span_ids: SpanIds, epoch: u32) -> Aggregate {
    let mut agg = Aggregate::default();
    let drain = |agg: &mut Aggregate| {
        #[cfg(test)]
        if tests::PANIC_IN_COLLECTOR.load(Ordering::Relaxed) {
            panic!("collector panic (test)");
        }
        sampler::drain(|raw| {
            // SAFETY: each popped sample's counts are taken over exactly once.
            let (labels, name) = unsafe { sampler::take(&raw.slot) };
            if raw.epoch != epoch {
                return; // another profile's: released just above
            }
            let (trace_id, span_id, span_name) = match span_ids {
                SpanIds::None => (0, 0, None),
                SpanIds::LocalRoot => (raw.slot.trace_id, raw.slot.local_root_span_id, name),
                SpanIds::Every => (raw.slot.trace_id, raw.slot.span_id, name),
            };
            let key = Key {
                stack: raw.stack().to_vec(),
                labels,
                trace_id,
                span_id,
                span_name,
            };
            *agg.samples.entry(key).or_default() += u64::from(raw.weight);
            if raw.flags & sampler::WALKED != 0 {
                agg.walked += u64::from(raw.weight);
                if raw.flags & sampler::TRUNCATED != 0 {
                    agg.truncated += u64::from(raw.weight);
                }
            }
        });
    };
    let mut last_scan = Instant::now();
    sampler::adopt_unknown_threads();
    loop {
        match stop.recv_timeout(Duration::from_millis(10)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drain(&mut agg);
                if last_scan.elapsed() >= Duration::from_millis(100) {
                    sampler::adopt_unknown_threads();
                    last_scan = Instant::now();
                }
            }
            _ => {
                drain(&mut agg);
                return agg;
            }
        }
    }
}

/// Identical samples, aggregated.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Code addresses, leaf first (the leaf is the interrupted instruction, the
    /// others are return addresses).
    pub stack: Vec<usize>,
    /// The labels current when the samples were taken.
    pub labels: LabelSet,
    /// The trace of the current span, if any.
    pub trace_id: Option<TraceId>,
    /// The span (per [`SpanIds`]), if any.
    pub span_id: Option<SpanId>,
    span_name: Option<Arc<Str>>,
    /// How many sampling periods these samples stand for.
    pub count: u64,
    /// CPU time they stand for (`count × period`).
    pub cpu: Duration,
}

impl Sample {
    /// The span name (per [`SpanIds`]), if recorded.
    pub fn span_name(&self) -> Option<&str> {
        self.span_name.as_deref().map(|s| &**s)
    }

    /// The function names of the stack, leaf first, inlined frames included.
    pub fn functions(&self) -> Vec<String> {
        self.stack
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| {
                resolve(if i > 0 { a.saturating_sub(1) } else { a })
                    .iter()
                    .map(|f| f.function.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A finished CPU profile.
#[derive(Clone, Debug)]
pub struct Profile {
    samples: Vec<Sample>,
    period: Duration,
    start: SystemTime,
    duration: Duration,
    stats: ProfileStats,
    /// Why the first unsampled thread's timer could not be made.
    timer_failure: Option<String>,
}

impl Profile {
    /// The aggregated samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
    /// The sampling period.
    pub fn period(&self) -> Duration {
        self.period
    }
    /// How long the profile ran.
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// Samples lost because the sample buffer was full (also written into the pprof
    /// output, as a comment and as a `[tracewire: dropped samples]` sample).
    pub fn dropped_samples(&self) -> u64 {
        self.stats.dropped_samples
    }
    /// What the profile recorded and what it could not: dropped samples, threads
    /// not sampled and their CPU (all also written into the pprof output).
    pub fn stats(&self) -> ProfileStats {
        self.stats
    }
    /// Total CPU time sampled.
    pub fn total_cpu(&self) -> Duration {
        self.samples.iter().map(|s| s.cpu).sum()
    }
    /// CPU time per value of label `key` (samples without it are left out).
    pub fn cpu_by_label(&self, key: &str) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        for s in &self.samples {
            if let Some(v) = s.labels.get(key) {
                *out.entry(v.to_owned()).or_default() += s.cpu;
            }
        }
        out
    }

    /// The profile in pprof form (not yet gzip'd).
    pub fn to_pprof(&self) -> pprof::Profile {
        let mut b = pprof::Builder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            self.period.as_nanos() as i64,
        );
        let nanos = |d: Duration| d.as_nanos() as i64;
        for s in &self.samples {
            b.labelled_sample(
                &s.stack,
                vec![s.count as i64, nanos(s.cpu)],
                &s.labels,
                (s.trace_id, s.span_id, s.span_name()),
            );
        }
        let dropped = self.stats.dropped_samples;
        if dropped > 0 {
            b.comment(&format!(
                "tracewire: {dropped} samples dropped (sample buffer full)"
            ));
            let cpu = nanos(self.period) * dropped as i64;
            b.gap_sample("[tracewire: dropped samples]", dropped as i64, cpu);
        }
        if mostly_truncated(&self.stats) {
            b.comment(&format!(
                "tracewire: {} of {} samples have truncated stacks (code built without frame \
                 pointers; build with -C force-frame-pointers=yes)",
                self.stats.truncated_samples, self.stats.walked_samples
            ));
        }
        let threads = self.stats.unsampled_threads;
        if threads > 0 {
            let cpu = self.stats.unsampled_cpu;
            b.comment(&format!(
                "tracewire: {threads} registered threads not sampled ({}), {cpu:?} of their CPU missing",
                self.timer_failure.as_deref().unwrap_or("timer_create failed")
            ));
            let periods = (cpu.as_nanos() / self.period.as_nanos().max(1)) as i64;
            b.gap_sample("[tracewire: threads not sampled]", periods, nanos(cpu));
        }
        b.profile.time_nanos = self
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        b.profile.duration_nanos = nanos(self.duration);
        b.profile
    }

    /// Writes the profile as gzip'd pprof protobuf (what `go tool pprof` reads).
    pub fn write_pprof(&self, w: impl Write) -> io::Result<()> {
        self.to_pprof().write_gzip(w)
    }
}

/// The lib's tests that start profiles or touch SIGPROF take turns.
#[cfg(test)]
pub(crate) fn test_serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    pub(super) static PANIC_IN_COLLECTOR: AtomicBool = AtomicBool::new(false);

    #[test]
    fn a_collector_panic_is_an_error_and_leaks_no_reference() {
        let _serial = test_serial();
        let set = LabelSet::new([("job", "panic")]);
        let profiler = Profiler::builder().with_frequency(1000).start().unwrap();
        PANIC_IN_COLLECTOR.store(true, Ordering::Relaxed);
        std::thread::scope(|s| {
            s.spawn(|| {
                register_current_thread().unwrap();
                crate::labels::with_labels(&set, || {
                    let start = thread_cpu_time().unwrap();
                    let mut x = 0u64;
                    while thread_cpu_time().unwrap() - start < Duration::from_millis(200) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                });
            });
        });
        let result = profiler.stop();
        PANIC_IN_COLLECTOR.store(false, Ordering::Relaxed);
        let leaked = set.strong_count() - 1;
        let error = result.expect_err("a collector panic must be an error");
        assert!(error.to_string().contains("panicked"), "{error}");
        assert_eq!(leaked, 0, "{leaked} references to the label set leaked");
        // The sampler is free again.
        Profiler::builder().start().unwrap().stop().unwrap();
    }
}
