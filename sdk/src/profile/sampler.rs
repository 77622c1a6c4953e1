//! The sampling half of the CPU profiler: the SIGPROF handler, the lock-free sample
//! ring it writes to, the per-thread CPU timers that drive it, and the registry of
//! threads whose stacks it may walk. This is the only module of the crate with
//! `unsafe` code.
//!
//! The handler is async-signal-safe by construction: it reads registers from the
//! signal context, walks frame pointers checking each frame against the thread's
//! stack bounds (recorded at registration, off the signal path), copies the
//! thread's context slot (labels and span ids), and claims a slot of a fixed,
//! preallocated ring with a compare-and-swap. No allocation, no lock, no call into
//! the dynamic loader or libgcc, no syscall per frame; `errno` is saved and
//! restored.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::context::ContextInner;
use crate::labels::{slot, LabelSetInner};
use crate::trace::Str;

/// Most frames kept per sample.
pub(crate) const MAX_DEPTH: usize = 128;
/// Samples the ring holds before the collector drains it (a power of two).
const RING_SLOTS: usize = 4096;
/// `si_code` of a signal sent by a POSIX timer (`timer_create`).
const SI_TIMER: i32 = -2;
/// `sigev_value` our timers carry, to tell their signals from anyone else's.
const TIMER_MAGIC: usize = 0x7472_6163_6577_6972; // "tracewir"
/// `sigev_value` of the timers given to threads nobody registered.
const ADOPTED_MAGIC: usize = TIMER_MAGIC + 1;

/// What a sample records of the context that was current when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotCopy {
    /// The label set, with one reference count taken for the sample (null: none).
    /// Whoever consumes the copy must release it with [`take_labels`] or
    /// [`release_labels`].
    pub(crate) labels: *const LabelSetInner,
    /// The span name, with one reference count taken (null: none recorded).
    pub(crate) span_name: *const Str,
    /// The current span's trace id (0: no span).
    pub(crate) trace_id: u128,
    /// The current span's span id (0: no span).
    pub(crate) span_id: u64,
    /// The current span's local root span id (0: no recording span).
    pub(crate) local_root_span_id: u64,
}

impl SlotCopy {
    pub(crate) const EMPTY: SlotCopy = SlotCopy {
        labels: std::ptr::null(),
        span_name: std::ptr::null(),
        trace_id: 0,
        span_id: 0,
        local_root_span_id: 0,
    };
}

/// Copies the calling thread's slot. Async-signal-safe: a few loads and, for the
/// label set and span name, one atomic increment each.
///
/// # Safety
/// Must run on the thread whose context is read, either as that thread's code or
/// in a signal handler that interrupted it. The slot then points at a context that
/// the thread's context stack keeps alive until the thread itself unpublishes it,
/// which cannot happen while this function runs.
#[inline(always)]
pub(crate) unsafe fn copy_current() -> SlotCopy {
    let ctx: *const ContextInner = slot::current_ptr();
    if ctx.is_null() {
        return SlotCopy::EMPTY;
    }
    // SAFETY: per this function's contract the published context is alive, and it
    // is immutable once published.
    let ctx = unsafe { &*ctx };
    let labels = ctx.labels.as_ptr();
    if !labels.is_null() {
        // SAFETY: `labels` comes from a live `Arc<LabelSetInner>` held by the
        // context; taking one more count is a single atomic increment.
        unsafe { Arc::increment_strong_count(labels) };
    }
    let span_name = ctx.span_name.as_ref().map_or(std::ptr::null(), Arc::as_ptr);
    if !span_name.is_null() {
        // SAFETY: as above, for the `Arc<Str>` the context holds.
        unsafe { Arc::increment_strong_count(span_name) };
    }
    let (trace_id, span_id, local_root) = match &ctx.span {
        Some(span) => {
            let sc = span.span_context();
            (
                sc.trace_id().to_u128(),
                sc.span_id().to_u64(),
                span.local_root_span_id().map_or(0, |id| id.to_u64()),
            )
        }
        None => (0, 0, 0),
    };
    SlotCopy {
        labels,
        span_name,
        trace_id,
        span_id,
        local_root_span_id: local_root,
    }
}

/// Gives back the reference counts a [`SlotCopy`] holds.
///
/// # Safety
/// The copy must come from [`copy_current`], and its counts be released once.
pub(crate) unsafe fn release(copy: &SlotCopy) {
    // SAFETY: per the contract, these are the counts `copy_current` took.
    unsafe {
        release_labels(copy.labels);
        if !copy.span_name.is_null() {
            Arc::decrement_strong_count(copy.span_name);
        }
    }
}

/// Gives back the reference count a [`SlotCopy`] holds on its label set.
///
/// # Safety
/// `labels` must come from [`copy_current`] and be released exactly once.
pub(crate) unsafe fn release_labels(labels: *const LabelSetInner) {
    if !labels.is_null() {
        // SAFETY: per the contract, this is the count `copy_current` took.
        unsafe { Arc::decrement_strong_count(labels) };
    }
}

/// Takes over the reference counts of a [`SlotCopy`] as owned values.
///
/// # Safety
/// Once per copy from [`copy_current`]; the copy's counts then belong to the result.
pub(crate) unsafe fn take(copy: &SlotCopy) -> (crate::labels::LabelSet, Option<Arc<Str>>) {
    let labels = if copy.labels.is_null() {
        crate::labels::LabelSet::empty()
    } else {
        // SAFETY: per the contract, this count belongs to the caller now.
        crate::labels::LabelSet::from_arc(unsafe { Arc::from_raw(copy.labels) })
    };
    let name = if copy.span_name.is_null() {
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { Arc::from_raw(copy.span_name) })
    };
    (labels, name)
}

/// One sample as the handler writes it.
#[derive(Clone, Copy)]
pub(crate) struct RawSample {
    /// Timer periods this sample stands for: 1 + the expirations the kernel folded
    /// into the signal.
    pub(crate) weight: u32,
    pub(crate) depth: u32,
    pub(crate) tid: i32,
    pub(crate) slot: SlotCopy,
    /// Return addresses, leaf first; `pcs[0]` is the interrupted instruction.
    pub(crate) pcs: [usize; MAX_DEPTH],
}

struct Cell {
    seq: AtomicUsize,
    sample: UnsafeCell<MaybeUninit<RawSample>>,
}

/// A bounded multi-producer, single-consumer queue of samples (Vyukov's bounded
/// queue): producers claim a cell with one compare-and-swap and never wait; when
/// the ring is full the sample is counted in `dropped` instead.
struct Ring {
    cells: Box<[Cell]>,
    enqueue: CachePadded<AtomicUsize>,
    dequeue: CachePadded<AtomicUsize>,
    dropped: AtomicU64,
}

// SAFETY: cells are handed between threads through the `seq` protocol: a producer
// owns a cell from its successful CAS until its Release store of `seq`, and the
// (single) consumer from its Acquire load of `seq` until its Release store.
unsafe impl Sync for Ring {}
// SAFETY: the only non-Send fields are the raw pointers of `SlotCopy`, which stand
// for reference counts of `Arc<LabelSetInner>` and `Arc<Str>`, both Send + Sync.
unsafe impl Send for Ring {}

impl Ring {
    fn new() -> Ring {
        Ring {
            cells: (0..RING_SLOTS)
                .map(|i| Cell {
                    seq: AtomicUsize::new(i),
                    sample: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
            enqueue: CachePadded::new(AtomicUsize::new(0)),
            dequeue: CachePadded::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Claims a cell for writing; `None` (and a counted drop) if the ring is full.
    #[inline(always)]
    fn claim(&self) -> Option<(usize, &Cell)> {
        let mask = RING_SLOTS - 1;
        let mut pos = self.enqueue.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let dif = seq as isize - pos as isize;
            if dif == 0 {
                match self.enqueue.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((pos, cell)),
                    Err(p) => pos = p,
                }
            } else if dif < 0 {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            } else {
                pos = self.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest sample. Only the collector calls this (single consumer).
    fn pop(&self) -> Option<RawSample> {
        let pos = self.dequeue.load(Ordering::Relaxed);
        let cell = &self.cells[pos & (RING_SLOTS - 1)];
        if cell.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: `seq == pos + 1` means a producer finished writing this cell and
        // released it to the consumer; nobody writes it until we hand it back.
        let sample = unsafe { (*cell.sample.get()).assume_init() };
        cell.seq.store(pos + RING_SLOTS, Ordering::Release);
        self.dequeue.store(pos + 1, Ordering::Relaxed);
        Some(sample)
    }
}

/// What the registry knows of a thread: enough to target a timer at it and to
/// check its frames.
#[derive(Debug)]
struct ThreadInfo {
    tid: libc::pid_t,
    pthread: libc::pthread_t,
    stack_lo: usize,
    stack_hi: usize,
}

/// A POSIX timer id (a kernel handle; safe to move between threads).
#[derive(Debug)]
struct Timer(libc::timer_t);
// SAFETY: a timer_t is an opaque id usable from any thread of the process.
unsafe impl Send for Timer {}

#[derive(Debug)]
struct Entry {
    info: Arc<ThreadInfo>,
    timer: Option<Timer>,
}

#[derive(Debug, Default)]
struct Registry {
    threads: Vec<Entry>,
    /// The sampling period while a profile runs.
    period: Option<Duration>,
    /// The SIGPROF action in place before the profile started.
    previous: Option<SigAction>,
    /// Timers given to threads nobody registered, by tid.
    adopted: Vec<(libc::pid_t, Timer)>,
}

struct SigAction(libc::sigaction);
// SAFETY: a sigaction struct is plain data (a function address, flags, a mask).
unsafe impl Send for SigAction {}
impl std::fmt::Debug for SigAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigAction")
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    threads: Vec::new(),
    period: None,
    previous: None,
    adopted: Vec::new(),
});
static RING: OnceLock<Ring> = OnceLock::new();
static RING_PTR: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The sampling period of the running profile, in nanoseconds.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// Incremented by every `start`, so per-thread fallback state of an earlier
/// profile is not mistaken for this one's.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised, no destructor: a plain TLS load from the handler.
    static THREAD: AtomicPtr<ThreadInfo> = const { AtomicPtr::new(std::ptr::null_mut()) };
    // For threads nobody registered: the profile epoch and the thread CPU time up to
    // which the process-wide timer's samples have credited this thread.
    static FALLBACK_EPOCH: AtomicU64 = const { AtomicU64::new(0) };
    static FALLBACK_CREDITED: AtomicU64 = const { AtomicU64::new(0) };
    // Unregisters the thread when it exits.
    static REGISTRATION: std::cell::RefCell<Option<Registration>> = const { std::cell::RefCell::new(None) };
}

struct Registration;

impl Drop for Registration {
    fn drop(&mut self) {
        unregister_current();
    }
}

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the profiler could not do something.
#[derive(Debug)]
pub(crate) struct OsError(pub(crate) &'static str, pub(crate) std::io::Error);

fn os_error(what: &'static str) -> OsError {
    OsError(what, std::io::Error::last_os_error())
}

/// Registers the calling thread: its CPU timer will drive samples with full stacks
/// while a profile runs. Idempotent. The thread unregisters when it exits.
pub(crate) fn register_current() -> Result<(), OsError> {
    if !THREAD.with(|t| t.load(Ordering::Relaxed)).is_null() {
        return Ok(());
    }
    // SAFETY: plain libc calls on the calling thread with valid out-pointers; the
    // attr is initialised by pthread_getattr_np and destroyed once.
    let info = unsafe {
        let pthread = libc::pthread_self();
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(pthread, &mut attr) != 0 {
            return Err(os_error("pthread_getattr_np"));
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return Err(os_error("pthread_attr_getstack"));
        }
        ThreadInfo {
            tid: libc::gettid(),
            pthread,
            stack_lo: addr as usize,
            stack_hi: addr as usize + size,
        }
    };
    let info = Arc::new(info);
    let mut reg = registry();
    let timer = match reg.period {
        Some(period) => create_timer(&info, period).ok(),
        None => None,
    };
    THREAD.with(|t| t.store(Arc::as_ptr(&info).cast_mut(), Ordering::Release));
    reg.threads.push(Entry { info, timer });
    drop(reg);
    let _ = REGISTRATION.try_with(|r| *r.borrow_mut() = Some(Registration));
    Ok(())
}

/// Unregisters the calling thread (deleting its timer). Idempotent.
pub(crate) fn unregister_current() {
    let Ok(ptr) = THREAD.try_with(|t| t.swap(std::ptr::null_mut(), Ordering::AcqRel)) else {
        return;
    };
    if ptr.is_null() {
        return;
    }
    let mut reg = registry();
    if let Some(i) = reg
        .threads
        .iter()
        .position(|e| Arc::as_ptr(&e.info) == ptr.cast_const())
    {
        let entry = reg.threads.swap_remove(i);
        if let Some(t) = entry.timer {
            delete_timer(t);
        }
    }
}

/// CPU time the calling thread (`process == false`) or the whole process has used.
pub(crate) fn cpu_time(process: bool) -> Duration {
    let clock = if process {
        libc::CLOCK_PROCESS_CPUTIME_ID
    } else {
        libc::CLOCK_THREAD_CPUTIME_ID
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Creates a timer on `info`'s CPU clock that signals that thread every `period`
/// of its CPU time, with the first expiry randomised within the period (so threads
/// started together do not fire in lockstep).
fn create_timer(info: &ThreadInfo, period: Duration) -> Result<Timer, OsError> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is registered, so its pthread_t is alive (it unregisters,
    // under the registry lock our caller holds, before it exits).
    if unsafe { libc::pthread_getcpuclockid(info.pthread, &mut clock) } != 0 {
        return Err(os_error("pthread_getcpuclockid"));
    }
    create_timer_on(clock, info.tid, TIMER_MAGIC, period)
}

/// A timer on `clock` that sends SIGPROF, carrying `magic`, to thread `tid`.
fn create_timer_on(
    clock: libc::clockid_t,
    tid: libc::pid_t,
    magic: usize,
    period: Duration,
) -> Result<Timer, OsError> {
    let first = Duration::from_nanos(
        1 + crate::trace::SpanId::random().to_u64() % period.as_nanos().max(1) as u64,
    );
    // SAFETY: all pointers are to valid locals; a timer aimed at a thread that has
    // exited fails to be created or never fires.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGPROF;
        sev.sigev_notify_thread_id = tid;
        sev.sigev_value = libc::sigval {
            sival_ptr: magic as *mut libc::c_void,
        };
        let mut timer: libc::timer_t = std::mem::zeroed();
        if libc::timer_create(clock, &mut sev, &mut timer) != 0 {
            return Err(os_error("timer_create"));
        }
        let spec = libc::itimerspec {
            it_interval: timespec(period),
            it_value: timespec(first),
        };
        if libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
            let err = os_error("timer_settime");
            libc::timer_delete(timer);
            return Err(err);
        }
        Ok(Timer(timer))
    }
}

/// The CPU clock of thread `tid` (what glibc's `pthread_getcpuclockid` computes,
/// for a thread we only know by its tid).
fn thread_clock(tid: libc::pid_t) -> libc::clockid_t {
    const CPUCLOCK_SCHED: libc::clockid_t = 2;
    const CPUCLOCK_PERTHREAD: libc::clockid_t = 4;
    ((!tid) << 3) | CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD
}

/// Gives every thread of the process that is neither registered nor adopted yet a
/// CPU timer of its own (leaf-only samples, weighed by the thread's own CPU clock).
/// Called by the collector while a profile runs.
pub(crate) fn adopt_unknown_threads() {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let tids: Vec<libc::pid_t> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut reg = registry();
    let Some(period) = reg.period else {
        return;
    };
    // Forget timers of threads that exited.
    let (live, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.adopted)
        .into_iter()
        .partition(|(tid, _)| tids.contains(tid));
    reg.adopted = live;
    for (_, t) in dead {
        delete_timer(t);
    }
    for tid in tids {
        let known = reg.threads.iter().any(|e| e.info.tid == tid)
            || reg.adopted.iter().any(|(t, _)| *t == tid);
        if !known {
            if let Ok(t) = create_timer_on(thread_clock(tid), tid, ADOPTED_MAGIC, period) {
                reg.adopted.push((tid, t));
            }
        }
    }
}

fn delete_timer(t: Timer) {
    // SAFETY: `t` was created by timer_create and is deleted once (moved in).
    unsafe { libc::timer_delete(t.0) };
}

fn set_process_timer(period: Option<Duration>) {
    let p = period.map(timespec).unwrap_or(libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    let tv = libc::timeval {
        tv_sec: p.tv_sec,
        tv_usec: (p.tv_nsec / 1000) as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: valid itimerval; ITIMER_PROF only sends SIGPROF, which we handle.
    unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) };
}

/// Starts sampling every registered thread (and, through the process-wide timer,
/// every other thread with leaf-only stacks) every `period` of CPU time.
pub(crate) fn start(period: Duration) -> Result<(), OsError> {
    let mut reg = registry();
    if reg.period.is_some() {
        return Err(OsError(
            "start",
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "a CPU profile is already running",
            ),
        ));
    }
    let ring = RING.get_or_init(Ring::new);
    RING_PTR.store((ring as *const Ring).cast_mut(), Ordering::Release);
    // SAFETY: installs our handler for SIGPROF with a zeroed, then filled, action;
    // the previous action is kept to be restored by `stop`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigprof as extern "C" fn(_, _, _) as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, &sa, &mut old) != 0 {
            return Err(os_error("sigaction"));
        }
        reg.previous = Some(SigAction(old));
    }
    PERIOD_NS.store(period.as_nanos().max(1) as u64, Ordering::Relaxed);
    EPOCH.fetch_add(1, Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Release);
    reg.period = Some(period);
    let period_ok = period;
    for e in reg.threads.iter_mut() {
        e.timer = create_timer(&e.info, period_ok).ok();
    }
    set_process_timer(Some(period));
    Ok(())
}

/// Stops sampling: deletes the timers and restores the previous SIGPROF action.
pub(crate) fn stop() {
    let mut reg = registry();
    if reg.period.take().is_none() {
        return;
    }
    set_process_timer(None);
    for e in reg.threads.iter_mut() {
        if let Some(t) = e.timer.take() {
            delete_timer(t);
        }
    }
    for (_, t) in std::mem::take(&mut reg.adopted) {
        delete_timer(t);
    }
    ACTIVE.store(false, Ordering::Release);
    // Let signals already generated land (and be ignored) before the previous
    // action comes back.
    std::thread::sleep(Duration::from_millis(5));
    if let Some(SigAction(old)) = reg.previous.take() {
        // SAFETY: restores the action saved by `start`.
        unsafe { libc::sigaction(libc::SIGPROF, &old, std::ptr::null_mut()) };
    }
}

/// Takes the oldest sample the handler wrote, if any.
pub(crate) fn pop() -> Option<RawSample> {
    RING.get()?.pop()
}

/// Samples lost because the ring was full, since the process started.
pub(crate) fn dropped() -> u64 {
    RING.get().map_or(0, |r| r.dropped.load(Ordering::Relaxed))
}

/// Measures the handler on the calling (registered) thread while a profile runs:
/// the body's cost per sample (called directly with a real `getcontext` context and
/// a timer-style siginfo), and the kernel's cost to deliver one SIGPROF and return
/// (a signal the handler ignores). For the benchmarks.
pub(crate) fn measure_handler(iterations: u32) -> (Duration, Duration) {
    let info = TimerInfo {
        si_signo: libc::SIGPROF,
        si_errno: 0,
        si_code: SI_TIMER,
        _pad: 0,
        si_tid: 0,
        si_overrun: 0,
        si_value: TIMER_MAGIC,
    };
    // SAFETY: zeroed ucontext filled by getcontext for the calling thread.
    let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getcontext(&mut uc) };
    let drain = || {
        while let Some(s) = pop() {
            // SAFETY: each popped sample's counts are released once.
            unsafe { release(&s.slot) };
        }
    };
    let mut body = Duration::ZERO;
    let mut done = 0;
    while done < iterations {
        let chunk = (iterations - done).min(1024);
        let start = std::time::Instant::now();
        for _ in 0..chunk {
            // SAFETY: a siginfo with the timer layout and a real ucontext of this
            // thread, whose frames lie within its registered stack.
            unsafe { sample(&info, (&mut uc as *mut libc::ucontext_t).cast()) };
        }
        body += start.elapsed();
        done += chunk;
        drain();
    }
    // SAFETY: pthread_self has no preconditions; signalling ourselves with SIGPROF
    // runs our handler, which ignores a signal that does not come from our timer.
    let me = unsafe { libc::pthread_self() };
    let start = std::time::Instant::now();
    for _ in 0..iterations {
        // SAFETY: as above.
        unsafe { libc::pthread_kill(me, libc::SIGPROF) };
    }
    let delivery = start.elapsed();
    (body / iterations.max(1), delivery / iterations.max(1))
}

/// The fields of `siginfo_t` a POSIX timer fills in (Linux, 64-bit layout).
#[repr(C)]
struct TimerInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    si_tid: libc::c_int,
    si_overrun: libc::c_int,
    si_value: usize,
}

/// Program counter, frame pointer and stack pointer of the interrupted code.
///
/// # Safety
/// `uctx` must be the `ucontext_t` the kernel passed to a SA_SIGINFO handler.
#[inline(always)]
unsafe fn registers(uctx: *const libc::c_void) -> (usize, usize, usize) {
    // SAFETY: per the contract.
    let uc = unsafe { &*(uctx as *const libc::ucontext_t) };
    #[cfg(target_arch = "x86_64")]
    {
        let g = &uc.uc_mcontext.gregs;
        (
            g[libc::REG_RIP as usize] as usize,
            g[libc::REG_RBP as usize] as usize,
            g[libc::REG_RSP as usize] as usize,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        let m = &uc.uc_mcontext;
        (m.pc as usize, m.regs[29] as usize, m.sp as usize)
    }
}

extern "C" fn on_sigprof(_sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno; saved and restored so
    // the interrupted code never sees our changes.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: called by the kernel with a valid siginfo and ucontext.
    unsafe { sample(info.cast_const().cast(), uctx) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The periods of CPU the calling (unregistered) thread used since the process
/// timer last credited it; 0 if it used less than one (e.g. it was idle).
#[inline(always)]
fn fallback_weight() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe; valid out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let period = PERIOD_NS.load(Ordering::Relaxed).max(1);
    let epoch = EPOCH.load(Ordering::Relaxed);
    let (Ok(seen_epoch), Ok(credited)) = (
        FALLBACK_EPOCH.try_with(|e| e.load(Ordering::Relaxed)),
        FALLBACK_CREDITED.try_with(|c| c.load(Ordering::Relaxed)),
    ) else {
        return 0;
    };
    if seen_epoch != epoch {
        // First signal of this profile on this thread: start crediting from now.
        let _ = FALLBACK_EPOCH.try_with(|e| e.store(epoch, Ordering::Relaxed));
        let _ = FALLBACK_CREDITED.try_with(|c| c.store(now, Ordering::Relaxed));
        return 0;
    }
    let periods = now.saturating_sub(credited) / period;
    if periods > 0 {
        let _ =
            FALLBACK_CREDITED.try_with(|c| c.store(credited + periods * period, Ordering::Relaxed));
    }
    periods.min(u64::from(u32::MAX)) as u32
}

/// The body of the handler.
///
/// # Safety
/// Only from the SIGPROF handler, with the kernel's siginfo and ucontext.
#[inline(always)]
unsafe fn sample(info: *const TimerInfo, uctx: *mut libc::c_void) {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let ring = RING_PTR.load(Ordering::Acquire);
    if ring.is_null() || uctx.is_null() || info.is_null() {
        return;
    }
    // SAFETY: the kernel's siginfo; the timer fields are only read for SI_TIMER.
    let info = unsafe { &*info };
    let thread = THREAD
        .try_with(|t| t.load(Ordering::Acquire))
        .unwrap_or(std::ptr::null_mut());
    let timer = if info.si_code == SI_TIMER {
        info.si_value
    } else {
        0
    };
    let weight = if !thread.is_null() {
        // A registered thread: only its own timer counts (the process-wide timer
        // and an adoption timer would count its CPU twice).
        if timer != TIMER_MAGIC {
            return;
        }
        1 + info.si_overrun.max(0) as u32
    } else if timer == ADOPTED_MAGIC || info.si_code > 0 {
        // A thread nobody registered, signalled by its adoption timer or by the
        // process-wide timer. The kernel sends the latter to an idle main thread
        // as readily as to the thread that used the CPU, so credit a thread only
        // with the CPU its own clock shows it used since its last sample.
        match fallback_weight() {
            0 => return,
            w => w,
        }
    } else {
        // A timer of a thread that just unregistered, or someone else's signal.
        return;
    };
    // SAFETY: the ring is 'static once published.
    let ring = unsafe { &*ring };
    let Some((pos, cell)) = ring.claim() else {
        return;
    };
    // SAFETY: we own `cell` from the successful claim until the Release store.
    let out = unsafe { (*cell.sample.get()).as_mut_ptr() };
    // SAFETY: `uctx` is the kernel's ucontext for this signal.
    let (pc, mut fp, sp) = unsafe { registers(uctx) };
    // SAFETY: `out` points to the claimed cell's storage; fields are written
    // through raw pointers, as the storage may be uninitialised.
    unsafe {
        let pcs = std::ptr::addr_of_mut!((*out).pcs) as *mut usize;
        *pcs = pc;
        let mut depth = 1usize;
        if !thread.is_null() {
            let t = &*thread;
            let lo = t.stack_lo.max(sp);
            let hi = t.stack_hi;
            while depth < MAX_DEPTH {
                if fp < lo || fp > hi - 16 || fp % std::mem::align_of::<usize>() != 0 {
                    break;
                }
                // The frame record [saved fp, return address] lies within the
                // thread's stack, checked just above: reading it cannot fault.
                let next = *(fp as *const usize);
                let ret = *((fp + 8) as *const usize);
                if ret == 0 {
                    break;
                }
                *pcs.add(depth) = ret;
                depth += 1;
                if next <= fp {
                    break;
                }
                fp = next;
            }
        }
        std::ptr::addr_of_mut!((*out).depth).write(depth as u32);
        std::ptr::addr_of_mut!((*out).weight).write(weight);
        std::ptr::addr_of_mut!((*out).tid).write(libc::gettid());
        std::ptr::addr_of_mut!((*out).slot).write(copy_current());
    }
    cell.seq.store(pos + 1, Ordering::Release);
}

#[cfg(test)]
mod tests {
    //! The slot is read from a real signal handler that interrupts a thread while
    //! it switches contexts in a tight loop.

    use super::*;
    use crate::labels::LabelSet;
    use crate::Context;
    use std::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};

    const MAX_RECORDS: usize = 200_000;
    // Per record: the label pointer copied, and the loop's intent/current markers.
    static RECORDS: [AtomicUsize; MAX_RECORDS * 3] =
        [const { AtomicUsize::new(0) }; MAX_RECORDS * 3];
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static INTENT: AtomicUsize = AtomicUsize::new(0);
    static CURRENT: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn handler(_: libc::c_int) {
        // SAFETY: runs on the interrupted thread (the signal is sent to it).
        let copy = unsafe { copy_current() };
        let i = COUNT.fetch_add(1, Ordering::Relaxed);
        if i < MAX_RECORDS {
            RECORDS[i * 3].store(copy.labels as usize, Ordering::Relaxed);
            RECORDS[i * 3 + 1].store(INTENT.load(Ordering::Relaxed), Ordering::Relaxed);
            RECORDS[i * 3 + 2].store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        } else {
            // SAFETY: the counts were taken just above and are not stored anywhere.
            unsafe { release(&copy) };
        }
    }

    #[test]
    fn signal_handler_copies_only_label_sets_really_installed() {
        // Four contexts with distinct labels; index 0 stands for "no context".
        let sets: Vec<LabelSet> = (0..4)
            .map(|i| LabelSet::new([("set", format!("{i}"))]))
            .collect();
        let ctxs: Vec<Context> = sets
            .iter()
            .map(|s| Context::new().with_labels(s.clone()))
            .collect();
        let ptr_of = |p: usize| -> Option<usize> {
            if p == 0 {
                return Some(0);
            }
            ctxs.iter()
                .position(|c| c.labels().as_ptr() as usize == p)
                .map(|i| i + 1)
        };

        // SAFETY: installs a plain handler for SIGPROF in this test process; the
        // previous action is restored below.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGPROF, &sa, &mut old), 0);
        }

        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() } as usize;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let killer = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: `target` is the test thread, alive until `stop` is set.
                unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGPROF) };
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
            }
        });

        let start = std::time::Instant::now();
        let mut i = 0usize;
        while COUNT.load(Ordering::Relaxed) < 20_000 && start.elapsed().as_secs() < 20 {
            let k = i % 4;
            let ctx = ctxs[k].clone();
            INTENT.store(k + 1, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            let guard = ctx.attach();
            compiler_fence(Ordering::SeqCst);
            CURRENT.store(k + 1, Ordering::Relaxed);
            // Nest a second switch half of the time, to exercise out-of-order paths.
            if i.is_multiple_of(2) {
                let j = (k + 1) % 4;
                INTENT.store(j + 1, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
                let inner = ctxs[j].clone().attach();
                compiler_fence(Ordering::SeqCst);
                CURRENT.store(j + 1, Ordering::Relaxed);
                INTENT.store(k + 1, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
                drop(inner);
                compiler_fence(Ordering::SeqCst);
                CURRENT.store(k + 1, Ordering::Relaxed);
            }
            INTENT.store(0, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            drop(guard);
            compiler_fence(Ordering::SeqCst);
            CURRENT.store(0, Ordering::Relaxed);
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap();
        // SAFETY: restores the action saved above.
        unsafe { libc::sigaction(libc::SIGPROF, &old, std::ptr::null_mut()) };

        let n = COUNT.load(Ordering::Relaxed).min(MAX_RECORDS);
        assert!(n >= 5_000, "only {n} signals arrived");
        let mut seen = [0usize; 5];
        for r in 0..n {
            let p = RECORDS[r * 3].load(Ordering::Relaxed);
            let intent = RECORDS[r * 3 + 1].load(Ordering::Relaxed);
            let current = RECORDS[r * 3 + 2].load(Ordering::Relaxed);
            let got = ptr_of(p).unwrap_or_else(|| panic!("record {r}: {p:#x} is no label set"));
            assert!(
                got == intent || got == current,
                "record {r}: copied set {got} while switching from {current} to {intent}"
            );
            seen[got] += 1;
            // SAFETY: each record holds one count taken by the handler.
            unsafe { release_labels(p as *const LabelSetInner) };
        }
        assert!(
            seen[1..].iter().all(|&c| c > 0),
            "every set was sampled: {seen:?}"
        );
        drop(ctxs);
        // All counts were given back: each set is now only held by `sets`.
        for s in &sets {
            assert_eq!(s.strong_count(), 1);
        }
        assert!(i > 1000);
    }

    #[test]
    fn copy_reads_span_ids_of_the_current_context() {
        let exporter = crate::export::InMemoryExporter::new();
        let provider = crate::TracerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let span = provider.tracer("t").start("s");
        let sc = span.span_context().clone();
        let _g = Context::new()
            .with_span(span)
            .with_labels(LabelSet::new([("a", "b")]))
            .attach();
        // SAFETY: called on the thread whose slot it reads.
        let copy = unsafe { copy_current() };
        assert_eq!(copy.trace_id, sc.trace_id().to_u128());
        assert_eq!(copy.span_id, sc.span_id().to_u64());
        // SAFETY: the counts taken by copy_current, taken over once.
        let (labels, _name) = unsafe { take(&copy) };
        assert_eq!(labels.get("a"), Some("b"));
    }
}
