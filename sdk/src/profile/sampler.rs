//! The sampling half of the CPU profiler: the SIGPROF handler, the lock-free sample
//! ring it writes to, the per-thread CPU timers that drive it, and the registry of
//! threads whose stacks it may walk. This is the only module of the crate with
//! `unsafe` code.
//!
//! The handler is async-signal-safe by construction: it reads registers from the
//! signal context, walks frame pointers checking each frame against the thread's
//! stack bounds (recorded at registration, off the signal path; for a thread
//! nobody registered, its stack is read with `process_vm_readv`, which fails
//! instead of faulting), copies the thread's context slot (labels and span
//! ids), and claims a slot of a fixed, preallocated ring with a compare-and-swap.
//! No allocation, no lock, no call into the dynamic loader or libgcc; `errno` is
//! saved and restored.
//!
//! Off the signal path: the registry (a mutex) of registered threads and their
//! timers, the ring's one consumer (whoever holds its consumer lock), the claim a
//! running profile holds from `start` to `release_claim`, and the `pthread_atfork`
//! handlers that take both locks around `fork`.

use std::cell::{RefCell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

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

pub(crate) use crate::slot::{copy_current, release, take, SlotCopy};

/// A sample's stack was walked within known bounds (a registered thread), so it
/// can be judged whole or truncated. Unregistered threads' walks are not judged.
pub(crate) const WALKED: u32 = 1;
/// The walk stopped at a frame pointer that was not zero yet led outside the
/// stack, or not towards its top: code without frame pointers was on the stack,
/// and the frames above it are missing.
pub(crate) const TRUNCATED: u32 = 2;

/// One sample as the handler writes it.
#[derive(Clone, Copy)]
pub(crate) struct RawSample {
    /// Timer periods this sample stands for: 1 + the expirations the kernel folded
    /// into the signal.
    pub(crate) weight: u32,
    pub(crate) depth: u32,
    pub(crate) tid: i32,
    /// The low 32 bits of the profile epoch the sample was taken in: a sample of
    /// another profile (left in the ring, or inherited through `fork`) is released,
    /// never counted.
    pub(crate) epoch: u32,
    /// [`WALKED`] and [`TRUNCATED`].
    pub(crate) flags: u32,
    pub(crate) slot: SlotCopy,
    /// Return addresses, leaf first; `pcs[0]` is the interrupted instruction. Only
    /// the first `depth` are this sample's.
    pub(crate) pcs: [usize; MAX_DEPTH],
}

impl RawSample {
    const ZERO: RawSample = RawSample {
        weight: 0,
        depth: 0,
        tid: 0,
        epoch: 0,
        flags: 0,
        slot: SlotCopy::EMPTY,
        pcs: [0; MAX_DEPTH],
    };

    /// The sample's stack, leaf first.
    pub(crate) fn stack(&self) -> &[usize] {
        &self.pcs[..(self.depth as usize).min(MAX_DEPTH)]
    }
}

struct Cell {
    seq: AtomicUsize,
    /// Always initialised (zeroed when the ring is made), so a sample is copied out
    /// whole even when its stack is shorter than the previous one in this cell.
    sample: UnsafeCell<RawSample>,
}

/// A bounded multi-producer, single-consumer queue of samples (Vyukov's bounded
/// queue): producers claim a cell with one compare-and-swap and never wait; when
/// the ring is full the sample's weight is counted in `dropped` instead. Whoever
/// pops holds `consumer`, so there is one consumer at a time by construction.
struct Ring {
    cells: Box<[Cell]>,
    enqueue: CachePadded<AtomicUsize>,
    dequeue: CachePadded<AtomicUsize>,
    /// Periods (sample weights) lost because the ring was full, since the start.
    dropped: AtomicU64,
    /// Periods written into the ring, since the start.
    written: AtomicU64,
    consumer: Mutex<()>,
}

// SAFETY: cells are handed between threads through the `seq` protocol: a producer
// owns a cell from its successful CAS until its Release store of `seq`, and the
// consumer (whoever holds `consumer`) from its Acquire load of `seq` until its
// Release store.
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
                    sample: UnsafeCell::new(RawSample::ZERO),
                })
                .collect(),
            enqueue: CachePadded::new(AtomicUsize::new(0)),
            dequeue: CachePadded::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            consumer: Mutex::new(()),
        }
    }

    /// Claims a cell for a sample of `weight` periods; `None` (and `weight` counted
    /// as dropped) if the ring is full.
    #[inline(always)]
    fn claim(&self, weight: u32) -> Option<(usize, &Cell)> {
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
                self.dropped.fetch_add(u64::from(weight), Ordering::Relaxed);
                return None;
            } else {
                pos = self.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Hands a claimed and written cell to the consumer.
    #[inline(always)]
    fn commit(&self, pos: usize, cell: &Cell, weight: u32) {
        self.written.fetch_add(u64::from(weight), Ordering::Relaxed);
        cell.seq.store(pos + 1, Ordering::Release);
    }

    /// Takes the oldest sample. `_consumer` proves the caller is the one consumer.
    fn pop(&self, _consumer: &MutexGuard<'_, ()>) -> Option<RawSample> {
        let pos = self.dequeue.load(Ordering::Relaxed);
        let cell = &self.cells[pos & (RING_SLOTS - 1)];
        if cell.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: `seq == pos + 1` means a producer finished writing this cell and
        // released it to the consumer, which we are (we hold `consumer`); nobody
        // writes it until we hand it back. The cell is always initialised.
        let sample = unsafe { *cell.sample.get() };
        cell.seq.store(pos + RING_SLOTS, Ordering::Release);
        self.dequeue.store(pos + 1, Ordering::Relaxed);
        Some(sample)
    }

    fn lock_consumer(&self) -> MutexGuard<'_, ()> {
        self.consumer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the registry knows of a thread: enough to target a timer at it and to
/// check its frames.
#[derive(Debug)]
struct ThreadInfo {
    /// The kernel thread id (rewritten in a forked child, where it changes).
    tid: AtomicI32,
    pthread: libc::pthread_t,
    stack_lo: usize,
    stack_hi: usize,
    /// The outermost frame record the thread's frame-pointer chain reached when it
    /// registered, when that chain does not end at a zero frame pointer (0: it
    /// does). The main thread's chain ends in libc's start code, built without
    /// frame pointers: a walk that reaches this frame is whole all the same.
    root_fp: usize,
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
    /// The thread's CPU time when its timer could not be made during this profile:
    /// it is not sampled, and the CPU it uses from then on is counted as such.
    unsampled_since: Option<Duration>,
}

#[derive(Debug)]
struct Registry {
    threads: Vec<Entry>,
    /// A profile owns the sampler, from a successful [`start`] to [`release_claim`].
    claimed: bool,
    /// The sampling period while the timers run.
    period: Option<Duration>,
    /// Timers given to threads nobody registered, by tid.
    adopted: Vec<(libc::pid_t, Timer)>,
    /// Registered threads whose timer could not be made during this profile.
    timer_failures: u64,
    /// CPU those threads used while not sampled, in this profile (finished spells).
    unsampled_cpu: Duration,
    /// Why the first of them failed (errno).
    first_failure: Option<i32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    threads: Vec::new(),
    claimed: false,
    period: None,
    adopted: Vec::new(),
    timer_failures: 0,
    unsampled_cpu: Duration::ZERO,
    first_failure: None,
});
static RING: OnceLock<Ring> = OnceLock::new();
static RING_PTR: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Handlers running now (on any thread): [`stop`] waits for them to finish, so no
/// sample of a stopped profile is written after its collector's last drain.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The sampling period of the running profile, in nanoseconds.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// Incremented by every `start`, so per-thread fallback state and samples of an
/// earlier profile are not mistaken for this one's.
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// The SIGPROF handler that was installed before ours, if it was a real handler
/// (not SIG_DFL or SIG_IGN): signals that are not ours are passed on to it.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);
static ATFORK: Once = Once::new();

/// Most threads nobody registered whose CPU time at a profile's start is kept.
const START_CPU_CAP: usize = 1024;
/// A thread's CPU time when the running profile started (tid 0: an empty cell).
struct StartCpu {
    tid: AtomicI32,
    ns: AtomicU64,
}
/// The CPU time of each thread nobody registered, taken when the profile started
/// (before `ACTIVE`), so that the CPU a thread uses before its first signal is
/// credited to that signal, not lost.
static START_CPU: [StartCpu; START_CPU_CAP] = [const {
    StartCpu {
        tid: AtomicI32::new(0),
        ns: AtomicU64::new(0),
    }
}; START_CPU_CAP];
static START_CPU_LEN: AtomicUsize = AtomicUsize::new(0);
/// Whether `START_CPU` holds every thread that was alive at the start: then a
/// thread not in it was born during the profile, and all its CPU is the profile's.
static START_CPU_COMPLETE: AtomicBool = AtomicBool::new(false);
/// The process id (the main thread's tid), read when a profile starts.
static PID: AtomicI32 = AtomicI32::new(0);
/// The main thread's stack mapping (`[stack]` in /proc/self/maps) when the
/// profile started: the bounds its frames are looked for in, should it not be
/// registered.
static MAIN_STACK_LO: AtomicUsize = AtomicUsize::new(0);
static MAIN_STACK_HI: AtomicUsize = AtomicUsize::new(0);
/// How far above the stack pointer a thread's `pthread_self()` (glibc puts the
/// thread descriptor at the top of the thread's stack block) may lie for it to be
/// taken as the top of that stack.
const MAX_UNREGISTERED_STACK: usize = 1 << 30;
/// Cleared when `process_vm_readv` is refused (a seccomp filter): unregistered
/// threads' samples then hold the leaf only.
static SAFE_READ: AtomicBool = AtomicBool::new(true);

type ForkGuards = (
    MutexGuard<'static, Registry>,
    Option<MutexGuard<'static, ()>>,
);

thread_local! {
    // Const-initialised, no destructor: a plain TLS load from the handler.
    static THREAD: AtomicPtr<ThreadInfo> = const { AtomicPtr::new(std::ptr::null_mut()) };
    // For threads nobody registered: the profile epoch and the thread CPU time up to
    // which the process-wide timer's samples have credited this thread.
    static FALLBACK_EPOCH: AtomicU64 = const { AtomicU64::new(0) };
    static FALLBACK_CREDITED: AtomicU64 = const { AtomicU64::new(0) };
    // Unregisters the thread when it exits.
    static REGISTRATION: RefCell<Option<Registration>> = const { RefCell::new(None) };
    // The locks `fork` is made under, from the prepare handler to the parent's or
    // child's handler (all three run on the forking thread).
    static FORK_GUARDS: RefCell<Option<ForkGuards>> = const { RefCell::new(None) };
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

/// Registers `pthread_atfork` handlers (once): `fork` happens with the registry
/// and the ring's consumer lock held, so the child never inherits them locked by a
/// thread it does not have, and the child forgets the parent's profile.
fn ensure_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: three extern "C" functions with no arguments, valid for the life
        // of the process.
        unsafe {
            libc::pthread_atfork(
                Some(atfork_prepare),
                Some(atfork_parent),
                Some(atfork_child),
            )
        };
    });
}

extern "C" fn atfork_prepare() {
    let reg = registry();
    let consumer = RING.get().map(Ring::lock_consumer);
    let _ = FORK_GUARDS.try_with(|g| *g.borrow_mut() = Some((reg, consumer)));
}

extern "C" fn atfork_parent() {
    let _ = FORK_GUARDS.try_with(|g| g.borrow_mut().take());
}

extern "C" fn atfork_child() {
    let _ = FORK_GUARDS.try_with(|g| {
        if let Some((mut reg, consumer)) = g.borrow_mut().take() {
            reset_after_fork(&mut reg);
            drop(consumer);
            drop(reg);
        }
    });
}

/// In a forked child: only the forking thread exists, and no timer survived
/// `fork` (fork(2)), so no profile runs and the registry holds only this thread.
fn reset_after_fork(reg: &mut Registry) {
    ACTIVE.store(false, Ordering::SeqCst);
    IN_HANDLER.store(0, Ordering::SeqCst);
    reg.claimed = false;
    reg.period = None;
    reg.timer_failures = 0;
    reg.unsampled_cpu = Duration::ZERO;
    reg.first_failure = None;
    // The timer ids are meaningless here: forget them, never delete them.
    reg.adopted.clear();
    let me = THREAD
        .try_with(|t| t.load(Ordering::Relaxed))
        .unwrap_or(std::ptr::null_mut());
    reg.threads
        .retain(|e| Arc::as_ptr(&e.info) == me.cast_const());
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for e in &mut reg.threads {
        e.timer = None;
        e.unsampled_since = None;
        e.info.tid.store(tid, Ordering::Relaxed);
    }
}

/// Registers the calling thread: its CPU timer will drive samples with full stacks
/// while a profile runs. Idempotent. The thread unregisters when it exits.
pub(crate) fn register_current() -> Result<(), OsError> {
    if !THREAD.with(|t| t.load(Ordering::Relaxed)).is_null() {
        return Ok(());
    }
    ensure_atfork();
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
        let (lo, hi) = (addr as usize, addr as usize + size);
        let mut uc: libc::ucontext_t = std::mem::zeroed();
        libc::getcontext(&mut uc);
        let (_, fp, sp) = registers((&uc as *const libc::ucontext_t).cast());
        ThreadInfo {
            tid: AtomicI32::new(libc::gettid()),
            pthread,
            stack_lo: lo,
            stack_hi: hi,
            root_fp: outermost_frame(fp, lo.max(sp), hi),
        }
    };
    let info = Arc::new(info);
    let tid = info.tid.load(Ordering::Relaxed);
    let mut reg = registry();
    // Its own timer replaces an adoption timer it had while unregistered.
    if let Some(i) = reg.adopted.iter().position(|(t, _)| *t == tid) {
        let (_, t) = reg.adopted.swap_remove(i);
        delete_timer(t);
    }
    let mut entry = Entry {
        info,
        timer: None,
        unsampled_since: None,
    };
    if let Some(period) = reg.period {
        arm(&mut reg, &mut entry, period);
    }
    THREAD.with(|t| t.store(Arc::as_ptr(&entry.info).cast_mut(), Ordering::Release));
    reg.threads.push(entry);
    drop(reg);
    reset_fallback_credit();
    let _ = REGISTRATION.try_with(|r| *r.borrow_mut() = Some(Registration));
    Ok(())
}

/// The address of the outermost frame record reachable from `fp` within
/// `[lo, hi)`, or 0 when the chain ends at a zero frame pointer.
///
/// # Safety
/// `[lo, hi)` must be the calling thread's stack and `fp` its frame pointer.
unsafe fn outermost_frame(mut fp: usize, lo: usize, hi: usize) -> usize {
    let mut last = 0;
    for _ in 0..MAX_DEPTH * 64 {
        if fp == 0 {
            return 0;
        }
        if fp < lo || fp > hi - 16 || !fp.is_multiple_of(std::mem::align_of::<usize>()) {
            return last;
        }
        // SAFETY: the record lies within this thread's stack, checked above.
        let next = unsafe { *(fp as *const usize) };
        last = fp;
        if next == 0 {
            return 0;
        }
        if next <= fp {
            return last;
        }
        fp = next;
    }
    last
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
        let entry = reg.swap_remove_entry(i);
        if let Some(t) = entry.timer {
            delete_timer(t);
        }
    }
    drop(reg);
    // From now on the fallback timers sample this thread: they credit it only with
    // the CPU it uses from now, not with what its own timer already counted.
    reset_fallback_credit();
}

impl Registry {
    /// Removes entry `i`, adding the CPU it used unsampled to the profile's count.
    fn swap_remove_entry(&mut self, i: usize) -> Entry {
        let mut entry = self.threads.swap_remove(i);
        self.close_unsampled(&mut entry);
        entry
    }

    fn close_unsampled(&mut self, entry: &mut Entry) {
        if let Some(since) = entry.unsampled_since.take() {
            if let Some(now) = thread_cpu(&entry.info) {
                self.unsampled_cpu += now.saturating_sub(since);
            }
        }
    }

    /// CPU used unsampled in this profile so far, open spells included.
    fn unsampled_cpu_now(&self) -> Duration {
        let open: Duration = self
            .threads
            .iter()
            .filter_map(|e| Some(thread_cpu(&e.info)?.saturating_sub(e.unsampled_since?)))
            .sum();
        self.unsampled_cpu + open
    }
}

/// Gives `entry` its CPU timer for `period`; on failure counts the thread as not
/// sampled (and from when).
fn arm(reg: &mut Registry, entry: &mut Entry, period: Duration) {
    match create_timer(&entry.info, period) {
        Ok(t) => entry.timer = Some(t),
        Err(OsError(_, e)) => {
            entry.timer = None;
            entry.unsampled_since = Some(thread_cpu(&entry.info).unwrap_or_default());
            reg.timer_failures += 1;
            reg.first_failure
                .get_or_insert(e.raw_os_error().unwrap_or(0));
        }
    }
}

/// Re-anchors the calling thread's fallback credit at its current CPU time.
fn reset_fallback_credit() {
    let now = cpu_time(false).as_nanos() as u64;
    let epoch = EPOCH.load(Ordering::Relaxed);
    let _ = FALLBACK_CREDITED.try_with(|c| c.store(now, Ordering::Relaxed));
    let _ = FALLBACK_EPOCH.try_with(|e| e.store(epoch, Ordering::Relaxed));
}

/// CPU time the calling thread (`process == false`) or the whole process has used.
pub(crate) fn cpu_time(process: bool) -> Duration {
    let clock = if process {
        libc::CLOCK_PROCESS_CPUTIME_ID
    } else {
        libc::CLOCK_THREAD_CPUTIME_ID
    };
    clock_time(clock).unwrap_or_default()
}

fn clock_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// CPU time a registered thread has used. Call under the registry lock (the
/// thread is then alive: it unregisters, under that lock, before it exits).
fn thread_cpu(info: &ThreadInfo) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is registered, so its pthread_t is alive.
    if unsafe { libc::pthread_getcpuclockid(info.pthread, &mut clock) } != 0 {
        return None;
    }
    clock_time(clock)
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
    create_timer_on(clock, info.tid.load(Ordering::Relaxed), TIMER_MAGIC, period)
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
/// CPU timer of its own (samples weighed by the thread's own CPU clock).
/// Called by the collector while a profile runs.
pub(crate) fn adopt_unknown_threads() {
    let Some(tids) = task_ids() else {
        return;
    };
    let mut reg = registry();
    let Some(period) = reg.period else {
        return;
    };
    // A start time of a thread that exited must not be taken for that of a later
    // thread given the same tid.
    for cell in &START_CPU[..START_CPU_LEN.load(Ordering::Relaxed)] {
        let tid = cell.tid.load(Ordering::Relaxed);
        if tid != 0 && !tids.contains(&tid) {
            cell.tid.store(0, Ordering::Relaxed);
        }
    }
    // Forget timers of threads that exited.
    let (live, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.adopted)
        .into_iter()
        .partition(|(tid, _)| tids.contains(tid));
    reg.adopted = live;
    for (_, t) in dead {
        delete_timer(t);
    }
    for tid in tids {
        let known = reg
            .threads
            .iter()
            .any(|e| e.info.tid.load(Ordering::Relaxed) == tid)
            || reg.adopted.iter().any(|(t, _)| *t == tid);
        if !known {
            if let Ok(t) = create_timer_on(thread_clock(tid), tid, ADOPTED_MAGIC, period) {
                reg.adopted.push((tid, t));
            }
        }
    }
}

/// The tids of the process's threads now.
fn task_ids() -> Option<Vec<libc::pid_t>> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// Before a profile's `ACTIVE`: the process id, the main thread's stack mapping,
/// and the CPU time of every thread nobody registered (see [`START_CPU`]).
fn snapshot_unregistered(reg: &Registry) {
    // SAFETY: getpid has no preconditions.
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    let (lo, hi) = main_stack().unwrap_or((0, 0));
    MAIN_STACK_LO.store(lo, Ordering::Relaxed);
    MAIN_STACK_HI.store(hi, Ordering::Relaxed);
    let tids = task_ids();
    let mut n = 0;
    let mut complete = tids.is_some();
    for tid in tids.unwrap_or_default() {
        let registered = reg
            .threads
            .iter()
            .any(|e| e.info.tid.load(Ordering::Relaxed) == tid);
        if registered {
            continue;
        }
        let Some(cpu) = clock_time(thread_clock(tid)) else {
            continue; // it exited meanwhile
        };
        if n == START_CPU_CAP {
            complete = false;
            break;
        }
        START_CPU[n]
            .ns
            .store(cpu.as_nanos() as u64, Ordering::Relaxed);
        START_CPU[n].tid.store(tid, Ordering::Relaxed);
        n += 1;
    }
    START_CPU_LEN.store(n, Ordering::Relaxed);
    START_CPU_COMPLETE.store(complete, Ordering::Relaxed);
}

/// The main thread's stack mapping, from the `[stack]` line of /proc/self/maps.
fn main_stack() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split(' ').next()?;
    let (lo, hi) = range.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

/// The CPU time thread `tid` had when the profile started, if it is in
/// [`START_CPU`]. Async-signal-safe (atomic loads only).
#[inline(always)]
fn start_cpu_of(tid: libc::pid_t) -> Option<u64> {
    let n = START_CPU_LEN.load(Ordering::Relaxed).min(START_CPU_CAP);
    START_CPU[..n]
        .iter()
        .find(|c| c.tid.load(Ordering::Relaxed) == tid)
        .map(|c| c.ns.load(Ordering::Relaxed))
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

/// Makes `on_sigprof` the SIGPROF handler if it is not (first use, or someone
/// replaced it since). It then stays installed for the life of the process: a
/// signal of a stopped profile that is still pending somewhere must find it, not
/// SIG_DFL (which terminates the process). A real handler found in its place is
/// kept, and signals that are not tracewire's are passed on to it.
fn install_handler() -> Result<(), OsError> {
    let ours = on_sigprof as extern "C" fn(_, _, _) as usize;
    // SAFETY: reads the current action into a zeroed struct, then installs ours
    // with a zeroed, then filled, action.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current) != 0 {
            return Err(os_error("sigaction"));
        }
        if current.sa_sigaction == ours {
            return Ok(());
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ours;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, &sa, &mut old) != 0 {
            return Err(os_error("sigaction"));
        }
        let previous = old.sa_sigaction;
        let real = previous != libc::SIG_DFL && previous != libc::SIG_IGN && previous != ours;
        PREVIOUS_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
        PREVIOUS_HANDLER.store(if real { previous } else { 0 }, Ordering::Release);
    }
    Ok(())
}

/// What a profile's start knows of the counters, to report its own share.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started {
    /// This profile's epoch (samples carry its low 32 bits).
    pub(crate) epoch: u64,
    written: u64,
    dropped: u64,
}

/// The sampler's counters for one profile.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Periods the handler wrote into the ring.
    pub(crate) written: u64,
    /// Periods lost because the ring was full.
    pub(crate) dropped: u64,
    /// Registered threads whose timer could not be made.
    pub(crate) timer_failures: u64,
    /// CPU those threads used, unsampled.
    pub(crate) unsampled_cpu: Duration,
    /// Why the first of them failed.
    pub(crate) first_failure: Option<std::io::Error>,
}

/// The counters of the profile that started at `since`, up to now.
pub(crate) fn counts(since: &Started) -> Counts {
    let reg = registry();
    let (written, dropped) = RING.get().map_or((0, 0), |r| {
        (
            r.written.load(Ordering::Relaxed),
            r.dropped.load(Ordering::Relaxed),
        )
    });
    Counts {
        written: written - since.written,
        dropped: dropped - since.dropped,
        timer_failures: reg.timer_failures,
        unsampled_cpu: reg.unsampled_cpu_now(),
        first_failure: reg.first_failure.map(std::io::Error::from_raw_os_error),
    }
}

/// Claims the sampler for a new profile and starts sampling every registered
/// thread (and, through the process-wide timer, every other thread) every
/// `period` of CPU time. A refused start (another profile owns the sampler)
/// touches nothing.
pub(crate) fn start(period: Duration) -> Result<Started, OsError> {
    ensure_atfork();
    let mut reg = registry();
    if reg.claimed {
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
    install_handler()?;
    reg.claimed = true;
    // Samples another profile left (or a parent, before fork) are released here,
    // by the one consumer.
    {
        let consumer = ring.lock_consumer();
        while let Some(s) = ring.pop(&consumer) {
            // SAFETY: each popped sample's counts are released once.
            unsafe { release(&s.slot) };
        }
    }
    reg.timer_failures = 0;
    reg.unsampled_cpu = Duration::ZERO;
    reg.first_failure = None;
    PERIOD_NS.store(period.as_nanos().max(1) as u64, Ordering::Relaxed);
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Started {
        epoch,
        written: ring.written.load(Ordering::Relaxed),
        dropped: ring.dropped.load(Ordering::Relaxed),
    };
    snapshot_unregistered(&reg);
    ACTIVE.store(true, Ordering::SeqCst);
    reg.period = Some(period);
    let mut threads = std::mem::take(&mut reg.threads);
    for e in threads.iter_mut() {
        arm(&mut reg, e, period);
    }
    reg.threads = threads;
    set_process_timer(Some(period));
    Ok(started)
}

/// Stops sampling: deletes the timers, then waits until no handler is running, so
/// every sample of this profile is in the ring. The handler stays installed (late
/// signals are ignored) and the sampler stays claimed until [`release_claim`].
pub(crate) fn stop() {
    let mut reg = registry();
    if reg.period.take().is_none() {
        return;
    }
    set_process_timer(None);
    let mut threads = std::mem::take(&mut reg.threads);
    for e in threads.iter_mut() {
        if let Some(t) = e.timer.take() {
            delete_timer(t);
        }
        reg.close_unsampled(e);
    }
    reg.threads = threads;
    for (_, t) in std::mem::take(&mut reg.adopted) {
        delete_timer(t);
    }
    ACTIVE.store(false, Ordering::SeqCst);
    drop(reg);
    // A handler that saw ACTIVE before the store above has incremented IN_HANDLER
    // before reading it (both SeqCst); wait for those, never for long.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while IN_HANDLER.load(Ordering::SeqCst) != 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// Whether a profile owns the sampler. Takes the registry lock only (no
/// allocation, no thread): usable in a forked child.
pub(crate) fn is_claimed() -> bool {
    registry().claimed
}

/// Gives the sampler up after [`stop`] and the last drain: another profile may start.
pub(crate) fn release_claim() {
    registry().claimed = false;
}

/// Pops every sample in the ring, oldest first, as the one consumer.
pub(crate) fn drain(mut f: impl FnMut(RawSample)) {
    let Some(ring) = RING.get() else {
        return;
    };
    let consumer = ring.lock_consumer();
    while let Some(s) = ring.pop(&consumer) {
        f(s);
    }
}

/// Measures the handler on the calling (registered) thread while a profile runs:
/// the body's cost per sample (called directly with a real `getcontext` context and
/// a timer-style siginfo), and the kernel's cost to deliver one SIGPROF and return
/// (a signal the handler ignores); and the walk of the same stack as if the
/// thread were not registered (its stack read with `process_vm_readv`), with
/// its depth. For the benchmarks.
pub(crate) fn measure_handler(iterations: u32) -> (Duration, Duration, Duration, usize) {
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
    let empty = || {
        // SAFETY: each popped sample's counts are released once.
        drain(|s| unsafe { release(&s.slot) });
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
        empty();
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
    // SAFETY: a real ucontext of this thread.
    let (_, fp, sp) = unsafe { registers((&uc as *const libc::ucontext_t).cast()) };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let mut pcs = [0usize; MAX_DEPTH];
    let mut depth = 0;
    let start = std::time::Instant::now();
    if let Some(hi) = unregistered_stack_top(tid, sp) {
        for _ in 0..iterations {
            // SAFETY: `pcs` holds MAX_DEPTH addresses.
            depth = unsafe { walk_unregistered(pcs.as_mut_ptr(), 1, fp, sp, hi) };
        }
    }
    let walk = start.elapsed();
    let n = iterations.max(1);
    (body / n, delivery / n, walk / n, depth)
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

extern "C" fn on_sigprof(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno; saved and restored so
    // the interrupted code never sees our changes.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: called by the kernel with a valid siginfo and ucontext.
    let ours = unsafe { sample(info.cast_const().cast(), uctx) };
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    if !ours {
        chain(sig, info, uctx);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Passes a SIGPROF that is not tracewire's to the handler installed before ours,
/// if that was a real handler; otherwise it is ignored (never SIG_DFL's exit).
#[inline(always)]
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let previous = PREVIOUS_HANDLER.load(Ordering::Acquire);
    if previous == 0 {
        return;
    }
    if PREVIOUS_SIGINFO.load(Ordering::Relaxed) {
        // SAFETY: `previous` is the address of the SA_SIGINFO handler that was
        // installed for SIGPROF before ours, called as the kernel would call it.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(previous) };
        f(sig, info, uctx);
    } else {
        // SAFETY: as above, for a plain `sa_handler`.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
        f(sig);
    }
}

/// The periods of CPU the calling (unregistered) thread used since the process
/// timer last credited it; 0 if it used less than one (e.g. it was idle).
#[inline(always)]
fn fallback_weight(tid: libc::pid_t) -> u32 {
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
    let credited = if seen_epoch == epoch {
        credited
    } else {
        // This thread's first signal of this profile: it is credited with the CPU
        // it used since the profile started (or since it was born, during the
        // profile), less a random phase within one period, as the registered
        // threads' timers start at a random point of their first period: the
        // expected count is then exactly the CPU used, over the period.
        let _ = FALLBACK_EPOCH.try_with(|e| e.store(epoch, Ordering::Relaxed));
        let since = match start_cpu_of(tid) {
            Some(ns) => ns,
            None if START_CPU_COMPLETE.load(Ordering::Relaxed) => 0,
            None => now, // not known: credit from now on
        };
        let phase = ((now ^ (tid as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            >> 11)
            % period;
        // Wrapping: for a thread born during the profile this lies "before" 0.
        since.wrapping_sub(phase)
    };
    let periods = now.wrapping_sub(credited) / period;
    let credited = credited.wrapping_add(periods.wrapping_mul(period));
    let _ = FALLBACK_CREDITED.try_with(|c| c.store(credited, Ordering::Relaxed));
    periods.min(u64::from(u32::MAX)) as u32
}

/// The top of the stack a thread nobody registered runs on, from the signal
/// path: for the main thread, the end of its `[stack]` mapping (read when the
/// profile started); for another thread, `pthread_self()`, which with glibc
/// points to the thread's descriptor at the top of its stack block (for stacks
/// glibc allocates and for those a caller gives it alike). `None` when `sp` does
/// not lie within `MAX_UNREGISTERED_STACK` below that top: the thread runs on a
/// stack of its own making, and only the leaf is kept.
#[inline(always)]
fn unregistered_stack_top(tid: libc::pid_t, sp: usize) -> Option<usize> {
    if !SAFE_READ.load(Ordering::Relaxed) {
        return None;
    }
    let hi = if tid == PID.load(Ordering::Relaxed) {
        if sp < MAIN_STACK_LO.load(Ordering::Relaxed) {
            return None;
        }
        MAIN_STACK_HI.load(Ordering::Relaxed)
    } else {
        // SAFETY: pthread_self reads the thread pointer; it takes no lock, does not
        // allocate and makes no call (async-signal-safe in practice in glibc).
        unsafe { libc::pthread_self() as usize }
    };
    (sp < hi && hi - sp <= MAX_UNREGISTERED_STACK && hi >= 16).then_some(hi)
}

/// Words of stack read per `process_vm_readv` by [`walk_unregistered`]: frame
/// records lie close together, so one read usually covers several.
const WINDOW_WORDS: usize = 256;

/// Walks the frame-pointer chain of a thread nobody registered from `fp`, within
/// `[sp, hi)`, into `pcs[depth..]`; returns the new depth. Its stack's top is
/// known (see [`unregistered_stack_top`]), not that every address below it is
/// mapped, so the stack is read into a 2 KiB window with `process_vm_readv`,
/// which stops at an unmapped address instead of faulting; a frame record
/// outside the window moves it.
///
/// # Safety
/// `pcs` must be valid for writes of `MAX_DEPTH` addresses.
#[inline(always)]
unsafe fn walk_unregistered(
    pcs: *mut usize,
    mut depth: usize,
    mut fp: usize,
    sp: usize,
    hi: usize,
) -> usize {
    let word = std::mem::size_of::<usize>();
    let mut window = [0usize; WINDOW_WORDS];
    // The stack addresses the window holds: [start, start + len * word).
    let (mut start, mut len) = (0usize, 0usize);
    while depth < MAX_DEPTH && fp != 0 {
        if fp < sp || fp > hi - 16 || !fp.is_multiple_of(word) {
            break;
        }
        if fp < start || fp + 2 * word > start + len * word {
            let want = ((hi - fp) / word).min(WINDOW_WORDS);
            len = read_stack(fp, &mut window[..want]);
            if len < 2 {
                // An unmapped page within the window, should the kernel refuse
                // the whole read: the record alone.
                len = read_stack(fp, &mut window[..2]);
            }
            start = fp;
            if len < 2 {
                break;
            }
        }
        let i = (fp - start) / word;
        let (next, ret) = (window[i], window[i + 1]);
        if ret == 0 {
            break;
        }
        // SAFETY: depth < MAX_DEPTH, within `pcs` per the contract.
        unsafe { *pcs.add(depth) = ret };
        depth += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    depth
}

/// Copies the words of this process's memory from `addr` into `out` with one
/// `process_vm_readv`; returns how many it copied: fewer than asked (maybe none)
/// where an unmapped page begins, never a fault. Async-signal-safe.
#[inline(always)]
fn read_stack(addr: usize, out: &mut [usize]) -> usize {
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(out),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: std::mem::size_of_val(out),
    };
    // SAFETY: `local` is our own buffer of that length; the kernel checks
    // `remote` and stops (or fails with EFAULT) rather than faulting where it is
    // not mapped.
    let n =
        unsafe { libc::process_vm_readv(PID.load(Ordering::Relaxed), &local, 1, &remote, 1, 0) };
    if n >= 0 {
        return n as usize / std::mem::size_of::<usize>();
    }
    // SAFETY: __errno_location returns this thread's errno (the handler restores it).
    let errno = unsafe { *libc::__errno_location() };
    if errno == libc::EPERM || errno == libc::ENOSYS {
        SAFE_READ.store(false, Ordering::Relaxed);
    }
    0
}

/// The body of the handler. Returns whether the signal was tracewire's (one of
/// its timers', or the process-wide timer's while a profile runs); others are
/// passed on by the caller.
///
/// # Safety
/// Only from the SIGPROF handler, with the kernel's siginfo and ucontext.
#[inline(always)]
unsafe fn sample(info: *const TimerInfo, uctx: *mut libc::c_void) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: the kernel's siginfo; the timer fields are only read for SI_TIMER.
    let info = unsafe { &*info };
    let timer = if info.si_code == SI_TIMER {
        info.si_value
    } else {
        0
    };
    let our_timer = timer == TIMER_MAGIC || timer == ADOPTED_MAGIC;
    // The process-wide timer's signals are sent by the kernel (si_code > 0).
    if !our_timer && info.si_code <= 0 {
        return false;
    }
    if !ACTIVE.load(Ordering::SeqCst) {
        // A late signal of a stopped profile (or another program's ITIMER_PROF,
        // which then goes to its handler).
        return our_timer;
    }
    let ring = RING_PTR.load(Ordering::Acquire);
    if ring.is_null() || uctx.is_null() {
        return true;
    }
    let thread = THREAD
        .try_with(|t| t.load(Ordering::Acquire))
        .unwrap_or(std::ptr::null_mut());
    // SAFETY: gettid has no preconditions (a plain syscall).
    let tid = unsafe { libc::gettid() };
    let weight = if !thread.is_null() {
        // A registered thread: only its own timer counts (the process-wide timer
        // and an adoption timer would count its CPU twice).
        if timer != TIMER_MAGIC {
            return true;
        }
        1 + info.si_overrun.max(0) as u32
    } else if timer == ADOPTED_MAGIC || info.si_code > 0 {
        // A thread nobody registered, signalled by its adoption timer or by the
        // process-wide timer. The kernel sends the latter to an idle main thread
        // as readily as to the thread that used the CPU, so credit a thread only
        // with the CPU its own clock shows it used since its last sample.
        match fallback_weight(tid) {
            0 => return true,
            w => w,
        }
    } else {
        // A timer of a thread that just unregistered.
        return true;
    };
    // SAFETY: the ring is 'static once published.
    let ring = unsafe { &*ring };
    let Some((pos, cell)) = ring.claim(weight) else {
        return true;
    };
    // SAFETY: we own `cell` from the successful claim until `commit`.
    let out = cell.sample.get();
    // SAFETY: `uctx` is the kernel's ucontext for this signal.
    let (pc, mut fp, sp) = unsafe { registers(uctx) };
    // SAFETY: `out` points to the claimed cell's (initialised) storage, which only
    // we access until `commit`.
    unsafe {
        let pcs = std::ptr::addr_of_mut!((*out).pcs) as *mut usize;
        *pcs = pc;
        let mut depth = 1usize;
        let mut flags = 0;
        if !thread.is_null() {
            flags |= WALKED;
            let t = &*thread;
            let lo = t.stack_lo.max(sp);
            let hi = t.stack_hi;
            // The outermost frame's saved frame pointer is zero, or the walk
            // reached the thread's root frame; stopping anywhere else (but at
            // MAX_DEPTH) means the chain was broken.
            let whole = |last: usize| t.root_fp != 0 && last >= t.root_fp;
            let mut last = 0;
            while depth < MAX_DEPTH && fp != 0 {
                if fp < lo || fp > hi - 16 || fp % std::mem::align_of::<usize>() != 0 {
                    if !whole(last) {
                        flags |= TRUNCATED;
                    }
                    break;
                }
                last = fp;
                // The frame record [saved fp, return address] lies within the
                // thread's stack, checked just above: reading it cannot fault.
                let next = *(fp as *const usize);
                let ret = *((fp + 8) as *const usize);
                if ret == 0 {
                    break;
                }
                *pcs.add(depth) = ret;
                depth += 1;
                if next != 0 && next <= fp {
                    if !whole(fp) {
                        flags |= TRUNCATED;
                    }
                    break;
                }
                fp = next;
            }
        } else if let Some(hi) = unregistered_stack_top(tid, sp) {
            // Not judged truncated or whole: its outermost frame is not known.
            depth = walk_unregistered(pcs, depth, fp, sp, hi);
        }
        (*out).depth = depth as u32;
        (*out).weight = weight;
        (*out).tid = tid;
        (*out).epoch = EPOCH.load(Ordering::Relaxed) as u32;
        (*out).flags = flags;
        (*out).slot = copy_current();
    }
    ring.commit(pos, cell, weight);
    true
}

#[cfg(test)]
mod tests {
    //! The slot is read from a real signal handler that interrupts a thread while
    //! it switches contexts in a tight loop.

    use super::*;
    use crate::labels::{self, LabelSet, LabelSetInner};
    use crate::slot::release_labels;
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

    /// Installs `handler` for SIGPROF and sends SIGPROF to the calling thread
    /// from another thread in a tight loop, until dropped (which restores the
    /// previous action).
    struct Interrupter {
        stop: std::sync::Arc<AtomicBool>,
        killer: Option<std::thread::JoinHandle<()>>,
        old: libc::sigaction,
    }

    impl Interrupter {
        fn start(handler: extern "C" fn(libc::c_int)) -> Interrupter {
            // SAFETY: installs a plain handler for SIGPROF in this test process;
            // the previous action is restored on drop.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above: a zeroed action filled in, then installed.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as usize;
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
                    // SAFETY: `target` is the test thread, alive until the
                    // interrupter (made and dropped on it) stops this loop.
                    unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGPROF) };
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                }
            });
            Interrupter {
                stop,
                killer: Some(killer),
                old,
            }
        }
    }

    impl Drop for Interrupter {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(k) = self.killer.take() {
                let _ = k.join();
            }
            // SAFETY: restores the action saved by `start`.
            unsafe { libc::sigaction(libc::SIGPROF, &self.old, std::ptr::null_mut()) };
        }
    }

    /// Spins for `ms` of the calling thread's CPU time.
    fn burn_ms(ms: u64) {
        let start = cpu_time(false);
        let mut x = 0u64;
        while cpu_time(false) - start < Duration::from_millis(ms) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn a_threads_first_fallback_signal_is_credited_with_the_cpu_it_used_since_the_start() {
        let _serial = crate::profile::test_serial();
        // A profile of 10 ms periods starts (as `start` does: the CPU of the
        // threads nobody registered is read before its epoch is published).
        PERIOD_NS.store(10_000_000, Ordering::Relaxed);
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        // This thread used 100 ms of CPU before the profile: not the profile's.
        burn_ms(100);
        START_CPU[0]
            .ns
            .store(cpu_time(false).as_nanos() as u64, Ordering::Relaxed);
        START_CPU[0].tid.store(me, Ordering::Relaxed);
        START_CPU_LEN.store(1, Ordering::Relaxed);
        START_CPU_COMPLETE.store(true, Ordering::Relaxed);
        EPOCH.fetch_add(1, Ordering::Relaxed);
        // 35 ms into the profile, its first signal: 3 periods, or 4 with the
        // random phase; not 0 (the CPU before the first signal lost) and not 13
        // (the CPU before the profile counted).
        burn_ms(35);
        let first = fallback_weight(me);
        burn_ms(20);
        let second = fallback_weight(me);
        // A thread born during the profile: all its CPU is the profile's.
        let born = std::thread::spawn(|| {
            burn_ms(35);
            // SAFETY: as above.
            fallback_weight(unsafe { libc::gettid() })
        })
        .join()
        .unwrap();
        START_CPU_LEN.store(0, Ordering::Relaxed);
        START_CPU_COMPLETE.store(false, Ordering::Relaxed);
        EPOCH.fetch_add(1, Ordering::Relaxed);
        assert!(
            (3..=4).contains(&first),
            "first signal credited {first} periods"
        );
        assert!(
            (5..=6).contains(&(first + second)),
            "{first} + {second} periods for 55 ms"
        );
        assert!(
            (3..=4).contains(&born),
            "a newborn thread credited {born} periods"
        );
    }

    #[test]
    fn signal_handler_copies_only_label_sets_really_installed() {
        let _serial = crate::profile::test_serial();
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

        let interrupter = Interrupter::start(handler);

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
        drop(interrupter);

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

    // Per record of the frames test: the context's set, the frames' sets, and
    // the loop's intent/current states.
    const FRAME_FIELDS: usize = 1 + crate::slot::MAX_FRAMES + 2;
    static FRAME_RECORDS: [AtomicUsize; MAX_RECORDS * FRAME_FIELDS] =
        [const { AtomicUsize::new(0) }; MAX_RECORDS * FRAME_FIELDS];
    static FRAME_COUNT: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn frames_handler(_: libc::c_int) {
        // SAFETY: runs on the interrupted thread (the signal is sent to it).
        let copy = unsafe { copy_current() };
        let i = FRAME_COUNT.fetch_add(1, Ordering::Relaxed);
        if i < MAX_RECORDS {
            let r = &FRAME_RECORDS[i * FRAME_FIELDS..(i + 1) * FRAME_FIELDS];
            r[0].store(copy.labels as usize, Ordering::Relaxed);
            for (f, p) in r[1..].iter().zip(copy.frames) {
                f.store(p as usize, Ordering::Relaxed);
            }
            r[FRAME_FIELDS - 2].store(INTENT.load(Ordering::Relaxed), Ordering::Relaxed);
            r[FRAME_FIELDS - 1].store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        } else {
            // SAFETY: the counts were taken just above and are not stored anywhere.
            unsafe { release(&copy) };
        }
    }

    /// A state of the frames test's loop: a context (1-based, 0: none) and up to
    /// two label frames over it (1-based, 0: none).
    fn state(ctx: usize, f0: usize, f1: usize) -> usize {
        ctx * 100 + f0 * 10 + f1
    }

    /// Moves the loop to `next`: INTENT before the switch, CURRENT after it.
    fn switch<R>(next: usize, f: impl FnOnce() -> R) -> R {
        INTENT.store(next, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        let r = f();
        compiler_fence(Ordering::SeqCst);
        CURRENT.store(next, Ordering::Relaxed);
        r
    }

    #[test]
    fn signal_handler_copies_label_frames_only_while_they_are_borrowed() {
        let _serial = crate::profile::test_serial();
        INTENT.store(0, Ordering::Relaxed);
        CURRENT.store(0, Ordering::Relaxed);
        let ctxs: Vec<Context> = (0..3)
            .map(|i| Context::new().with_labels(LabelSet::new([("ctx", format!("{i}"))])))
            .collect();
        let ctx_sets: Vec<LabelSet> = ctxs.iter().map(|c| c.labels().clone()).collect();
        let frames: Vec<LabelSet> = (0..3)
            .map(|i| LabelSet::new([("frame", format!("{i}"))]))
            .collect();
        // The pointers a sample taken in state `s` holds.
        let expected = |s: usize| -> [usize; 1 + crate::slot::MAX_FRAMES] {
            let mut out = [0; 1 + crate::slot::MAX_FRAMES];
            let (c, f0, f1) = (s / 100, s / 10 % 10, s % 10);
            if c > 0 {
                out[0] = ctxs[c - 1].labels().as_ptr() as usize;
            }
            for (slot, f) in out[1..].iter_mut().zip([f0, f1]) {
                if f > 0 {
                    *slot = frames[f - 1].as_ptr() as usize;
                }
            }
            out
        };

        let interrupter = Interrupter::start(frames_handler);

        let start = std::time::Instant::now();
        let mut i = 0usize;
        while FRAME_COUNT.load(Ordering::Relaxed) < 20_000 && start.elapsed().as_secs() < 20 {
            let (k, j) = (i % 3, i / 3 % 3);
            let (c, f0, f1, other) = (k + 1, j + 1, (j + 1) % 3 + 1, (k + 1) % 3 + 1);
            let guard = switch(state(c, 0, 0), || ctxs[k].clone().attach());
            INTENT.store(state(c, f0, 0), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            {
                labels::with_labels(&frames[f0 - 1], || {
                    CURRENT.store(state(c, f0, 0), Ordering::Relaxed);
                    INTENT.store(state(c, f0, f1), Ordering::Relaxed);
                    compiler_fence(Ordering::SeqCst);
                    labels::with_labels(&frames[f1 - 1], || {
                        CURRENT.store(state(c, f0, f1), Ordering::Relaxed);
                        // A borrowed context over the frames, half of the time.
                        if i.is_multiple_of(2) {
                            INTENT.store(state(other, 0, 0), Ordering::Relaxed);
                            compiler_fence(Ordering::SeqCst);
                            ctxs[other - 1].in_scope(|| {
                                CURRENT.store(state(other, 0, 0), Ordering::Relaxed);
                                INTENT.store(state(c, f0, f1), Ordering::Relaxed);
                                compiler_fence(Ordering::SeqCst);
                            });
                            compiler_fence(Ordering::SeqCst);
                            CURRENT.store(state(c, f0, f1), Ordering::Relaxed);
                        }
                        INTENT.store(state(c, f0, 0), Ordering::Relaxed);
                        compiler_fence(Ordering::SeqCst);
                    });
                    compiler_fence(Ordering::SeqCst);
                    CURRENT.store(state(c, f0, 0), Ordering::Relaxed);
                    INTENT.store(state(c, 0, 0), Ordering::Relaxed);
                    compiler_fence(Ordering::SeqCst);
                });
            }
            compiler_fence(Ordering::SeqCst);
            CURRENT.store(state(c, 0, 0), Ordering::Relaxed);
            switch(0, || drop(guard));
            i += 1;
        }
        drop(interrupter);

        let n = FRAME_COUNT.load(Ordering::Relaxed).min(MAX_RECORDS);
        assert!(n >= 5_000, "only {n} signals arrived");
        let mut with_frames = 0;
        for r in 0..n {
            let rec = &FRAME_RECORDS[r * FRAME_FIELDS..(r + 1) * FRAME_FIELDS];
            let got: Vec<usize> = rec[..FRAME_FIELDS - 2]
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .collect();
            let intent = rec[FRAME_FIELDS - 2].load(Ordering::Relaxed);
            let current = rec[FRAME_FIELDS - 1].load(Ordering::Relaxed);
            assert!(
                got[..] == expected(intent)[..] || got[..] == expected(current)[..],
                "record {r}: copied {got:x?} while switching from state {current} to {intent}"
            );
            if got[1] != 0 {
                with_frames += 1;
            }
            let copy = SlotCopy {
                labels: got[0] as *const LabelSetInner,
                frames: std::array::from_fn(|f| got[1 + f] as *const LabelSetInner),
                ..SlotCopy::EMPTY
            };
            // SAFETY: each record holds the counts taken by the handler.
            unsafe { release(&copy) };
        }
        assert!(with_frames > 0, "no sample had frames");
        drop(ctxs);
        // All counts were given back.
        for s in ctx_sets.iter().chain(&frames) {
            assert_eq!(s.strong_count(), 1);
        }
        assert!(i > 1000);
    }

    #[test]
    fn a_sample_dropped_on_a_full_ring_counts_its_weight() {
        let _serial = crate::profile::test_serial();
        register_current().unwrap();
        // 1 Hz: the profile's own timers stay quiet while the test fills the ring.
        let started = start(Duration::from_secs(1)).unwrap();
        // SAFETY: zeroed ucontext filled by getcontext for the calling thread.
        let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        unsafe { libc::getcontext(&mut uc) };
        let info = |overrun| TimerInfo {
            si_signo: libc::SIGPROF,
            si_errno: 0,
            si_code: SI_TIMER,
            _pad: 0,
            si_tid: 0,
            si_overrun: overrun,
            si_value: TIMER_MAGIC,
        };
        for _ in 0..RING_SLOTS {
            // SAFETY: a timer-style siginfo and a real ucontext of this thread.
            unsafe { sample(&info(0), (&mut uc as *mut libc::ucontext_t).cast()) };
        }
        let before = counts(&started).dropped;
        // A signal standing for 3 periods (2 overruns) finds the ring full.
        // SAFETY: as above.
        unsafe { sample(&info(2), (&mut uc as *mut libc::ucontext_t).cast()) };
        let lost = counts(&started).dropped - before;
        stop();
        // SAFETY: each popped sample's counts are released once.
        drain(|s| unsafe { release(&s.slot) });
        release_claim();
        assert_eq!(
            lost, 3,
            "a dropped sample of weight 3 was counted as {lost}"
        );
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
