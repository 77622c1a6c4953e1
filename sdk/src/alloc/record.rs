//! The allocation path: sampling by bytes, the stack walk, and the fixed tables
//! the samples live in. Runs inside the global allocator, so nothing here
//! allocates while it holds the table lock, and the tables themselves are mapped
//! memory, not heap.
//!
//! - Each thread counts down a random number of bytes (exponentially distributed
//!   with the sample rate as mean, as Go's `MemProfileRate`); the allocation that
//!   crosses zero is sampled: its address, size, stack (frame pointers) and the
//!   thread's current context (labels, span) go into the live table.
//! - A counting filter over addresses tells a free, with one atomic load, whether
//!   its block may be sampled; only then is the lock taken. A freed sample's
//!   scaled counts move to the freed table, aggregated by stack and label set.
//! - A thread-local guard keeps the recorder's own allocations (the first
//!   `pthread_getattr_np` of a thread) from being sampled.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::profile::sampler::{release, SlotCopy};

/// Frames kept per sample.
pub(crate) const MAX_FRAMES: usize = 64;
/// Sampled blocks alive at once that can be tracked (at the default rate,
/// 8 GiB of live heap).
pub(crate) const LIVE_CAP: usize = 1 << 14;
/// Distinct (stack, label set) pairs of freed samples that can be told apart.
pub(crate) const FREED_CAP: usize = 1 << 12;
/// Cells of the counting address filter.
const FILTER_CELLS: usize = 1 << 16;
/// Cells a block's entry may be from its home cell in the live table.
const PROBES: usize = 64;

/// The mean sampling interval in bytes (0: off).
pub(crate) static RATE: AtomicUsize = AtomicUsize::new(512 * 1024);
/// Whether a `Profiled` allocator has run.
pub(crate) static INSTALLED: AtomicU8 = AtomicU8::new(0);
/// Bytes a thread allocates, while sampling is off, before it looks again.
const RATE_OFF_RECHECK: i64 = 1 << 20;
/// Samples not recorded because the live table was full.
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Freed samples whose counts could not be kept (freed table full).
pub(crate) static FREED_LOST: AtomicU64 = AtomicU64::new(0);

static FILTER: [AtomicU8; FILTER_CELLS] = [const { AtomicU8::new(0) }; FILTER_CELLS];
static TABLES: AtomicPtr<Tables> = AtomicPtr::new(std::ptr::null_mut());
static LOCK: AtomicBool = AtomicBool::new(false);
static ATFORK: std::sync::Once = std::sync::Once::new();

thread_local! {
    // Const-initialised, no destructors: usable from the allocator at any point
    // of a thread's life, without allocating.
    static COUNTDOWN: Cell<i64> = const { Cell::new(0) };
    static RNG: Cell<u64> = const { Cell::new(0) };
    static IN_RECORDER: Cell<bool> = const { Cell::new(false) };
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// One sampled block alive.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Live {
    /// The block's address; 0: empty cell; 1: a removed one (the probe goes on).
    pub(crate) ptr: usize,
    pub(crate) size: usize,
    /// The rate it was sampled at.
    pub(crate) rate: usize,
    pub(crate) depth: usize,
    pub(crate) stack: [usize; MAX_FRAMES],
    pub(crate) slot: SlotCopy,
}

/// Freed samples of one stack and label set.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Freed {
    /// 0: empty; otherwise a hash of the stack and label set (never 0).
    pub(crate) key: u64,
    pub(crate) depth: usize,
    pub(crate) stack: [usize; MAX_FRAMES],
    /// The label set (one reference held by this entry); null: none.
    pub(crate) labels: *const crate::labels::LabelSetInner,
    /// Scaled counts: objects and bytes allocated (and since freed).
    pub(crate) objects: f64,
    pub(crate) bytes: f64,
}

#[repr(C)]
struct Tables {
    live: [Live; LIVE_CAP],
    freed: [Freed; FREED_CAP],
}

/// A snapshot entry: a live block or a freed aggregate.
pub(crate) enum Entry {
    Live(Live),
    Freed(Freed),
}

/// The tables, mapped (zeroed) on first use; null if the mapping failed.
fn tables() -> *mut Tables {
    let t = TABLES.load(Ordering::Acquire);
    if !t.is_null() {
        return t;
    }
    let size = std::mem::size_of::<Tables>();
    // SAFETY: an anonymous private mapping, no file or address involved; the
    // result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    ensure_atfork();
    // Zeroed pages are valid tables: every cell empty (ptr 0, key 0, null slot
    // pointers, zero counts).
    match TABLES.compare_exchange(
        std::ptr::null_mut(),
        p.cast(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => p.cast(),
        Err(winner) => {
            // SAFETY: our own mapping, never published.
            unsafe { libc::munmap(p, size) };
            winner
        }
    }
}

/// Holds the table lock: a spin lock (the sections under it are a few hundred
/// instructions and never allocate), so that `fork` handlers can take and drop
/// it without a guard object.
struct Locked;

fn lock() -> Locked {
    acquire();
    Locked
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

fn acquire() {
    let mut spins = 0u32;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// A child forked while another thread held the lock would never see it
/// released: the lock is taken around `fork` and released on both sides.
fn ensure_atfork() {
    extern "C" fn prepare() {
        acquire();
    }
    extern "C" fn release_lock() {
        LOCK.store(false, Ordering::Release);
    }
    ATFORK.call_once(|| {
        // SAFETY: registers plain functions that only touch an atomic.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release_lock), Some(release_lock)) };
    });
}

#[inline]
fn mix(x: u64) -> u64 {
    // splitmix64's finaliser.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The filter cell of a block: by address (16-byte granules, wrapping every
/// 1 MiB: a 64 KiB table that stays in cache), so that blocks freed near each
/// other read nearby cells; a free takes the lock for nothing only when a live
/// sample sits a multiple of 1 MiB away.
#[inline]
fn filter_cell(ptr: usize) -> &'static AtomicU8 {
    &FILTER[(ptr >> 4) % FILTER_CELLS]
}

/// A uniform random number in (0, 1], from a per-thread xorshift generator.
fn uniform() -> f64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seeded from the thread's stack address and a process-wide counter.
            static SEED: AtomicU64 = AtomicU64::new(0);
            let n = SEED.fetch_add(1, Ordering::Relaxed);
            x = mix(&x as *const u64 as u64 ^ mix(n)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    })
}

/// Bytes until the next sample: exponential with mean `rate`.
fn next_interval(rate: usize) -> i64 {
    (-uniform().ln() * rate as f64).min(i64::MAX as f64 / 2.0) as i64 + 1
}

/// Counts `size` bytes off the calling thread's countdown; true when this
/// allocation crosses it (or is the thread's first): the caller then makes the
/// allocation and hands it to [`on_sampled`]. The common case is a thread-local
/// load, subtraction and store, before the inner allocator is called, so that
/// the call to it stays a tail call.
#[inline(always)]
pub(crate) fn crosses(size: usize) -> bool {
    COUNTDOWN.with(|c| {
        // No overflow: the countdown is at most i64::MAX / 2 and a size at most
        // isize::MAX.
        let left = c.get() - size as i64;
        c.set(left);
        left <= 0
    })
}

/// After an allocation for which [`crosses`] was true: a thread's first
/// allocation (its countdown starts at 0), one that crossed the countdown, or
/// any allocation past the countdown while sampling is off.
#[cold]
#[inline(never)]
pub(crate) fn on_sampled(ptr: *mut u8, size: usize) {
    INSTALLED.store(1, Ordering::Relaxed);
    let rate = RATE.load(Ordering::Relaxed);
    if rate == 0 {
        // Off: look again after this many bytes (sampling may be turned on).
        COUNTDOWN.with(|c| c.set(RATE_OFF_RECHECK));
        return;
    }
    let first = RNG.with(Cell::get) == 0;
    if first {
        // Nothing sampled before the first interval is drawn.
        let left = next_interval(rate) - size as i64;
        if left > 0 {
            COUNTDOWN.with(|c| c.set(left));
            return;
        }
    }
    COUNTDOWN.with(|c| c.set(next_interval(rate)));
    if !ptr.is_null() {
        record(ptr as usize, size, rate);
    }
}

/// Called before `ptr` is freed (or moved by a reallocation).
#[inline]
pub(crate) fn on_free(ptr: *mut u8) {
    if filter_cell(ptr as usize).load(Ordering::Relaxed) != 0 {
        unrecord(ptr as usize);
    }
}

/// The calling thread's stack bounds, read once per thread.
fn stack_bounds() -> (usize, usize) {
    let b = STACK.with(Cell::get);
    if b.1 != 0 {
        return b;
    }
    // SAFETY: libc calls on the calling thread with valid out-pointers; the attr
    // is initialised by pthread_getattr_np and destroyed once. (For the main
    // thread glibc reads /proc/self/maps here, with libc's malloc, not ours.)
    let bounds = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return (0, 0);
        }
        (addr as usize, addr as usize + size)
    };
    STACK.with(|s| s.set(bounds));
    bounds
}

#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads the frame pointer register; no memory is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: as above, for aarch64's frame pointer.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// Walks the frame-pointer chain of the calling thread into `out`; returns the
/// depth. Return addresses only (the innermost is the caller of `record`).
#[inline(never)]
fn walk(out: &mut [usize; MAX_FRAMES]) -> usize {
    let (lo, hi) = stack_bounds();
    let mut fp = frame_pointer();
    let lo = lo.max(&fp as *const usize as usize);
    let mut depth = 0;
    while depth < MAX_FRAMES && fp != 0 {
        if fp < lo || fp + 16 > hi || !fp.is_multiple_of(std::mem::align_of::<usize>()) {
            break;
        }
        // SAFETY: the record [saved fp, return address] lies within this
        // thread's stack, checked just above, so reading it cannot fault.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            break;
        }
        out[depth] = ret;
        depth += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    depth
}

/// Runs `f` unless the calling thread is already in the recorder (then the
/// allocation is the recorder's own, or the thread is exiting).
fn guarded(f: impl FnOnce()) {
    let entered = IN_RECORDER.try_with(|g| !g.replace(true)).unwrap_or(false);
    if entered {
        f();
        let _ = IN_RECORDER.try_with(|g| g.set(false));
    }
}

/// Runs `f` with sampling off on the calling thread (its allocations are not
/// sampled; its frees are still matched).
pub(crate) fn unsampled<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_RECORDER.try_with(|g| g.replace(true)).unwrap_or(true);
    let out = f();
    let _ = IN_RECORDER.try_with(|g| g.set(was));
    out
}

#[inline(never)]
fn record(ptr: usize, size: usize, rate: usize) {
    guarded(|| {
        let tables = tables();
        if tables.is_null() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut live = Live {
            ptr,
            size,
            rate,
            depth: 0,
            stack: [0; MAX_FRAMES],
            // SAFETY: on the thread whose context is read (this allocation's),
            // in the recorder's guard (the merge's allocations are not sampled)
            // and before the table lock is taken.
            slot: unsafe { crate::slot::copy_merged() },
        };
        live.depth = walk(&mut live.stack);
        let stored = {
            let _g = lock();
            // SAFETY: the tables are 'static once published and only touched
            // under LOCK, which we hold.
            let cells = unsafe { &mut (*tables).live };
            let start = mix(ptr as u64) as usize % LIVE_CAP;
            let mut stored = false;
            for i in 0..PROBES {
                let cell = &mut cells[(start + i) % LIVE_CAP];
                if cell.ptr <= 1 {
                    *cell = live;
                    stored = true;
                    break;
                }
            }
            if stored {
                filter_cell(ptr).fetch_add(1, Ordering::Relaxed);
            }
            stored
        };
        if !stored {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the counts copy_current took, released once (after the
            // lock: a release may free, and a free may need the lock).
            unsafe { release(&live.slot) };
        }
    });
}

/// Unbiased counts of a sample of `size` bytes taken at mean interval `rate`:
/// each sampled block stands for `1 / (1 - e^(-size/rate))` blocks (Go's
/// `scaleHeapSample`).
pub(crate) fn scale(size: usize, rate: usize) -> (f64, f64) {
    if rate <= 1 || size == 0 {
        return (1.0, size as f64);
    }
    let s = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    (s, size as f64 * s)
}

fn freed_key(stack: &[usize], labels: usize) -> u64 {
    let mut h = mix(labels as u64);
    for &a in stack {
        h = mix(h ^ a as u64);
    }
    h | 1
}

#[inline(never)]
fn unrecord(ptr: usize) {
    let tables = TABLES.load(Ordering::Acquire);
    if tables.is_null() {
        return;
    }
    // What to give back once the lock is released.
    let mut to_release = SlotCopy::EMPTY;
    {
        let _g = lock();
        // SAFETY: as in `record`: the tables are only touched under LOCK.
        let t = unsafe { &mut *tables };
        let start = mix(ptr as u64) as usize % LIVE_CAP;
        let mut found = None;
        for i in 0..PROBES {
            let cell = &mut t.live[(start + i) % LIVE_CAP];
            if cell.ptr == ptr {
                found = Some(*cell);
                cell.ptr = 1;
                break;
            }
            if cell.ptr == 0 {
                break;
            }
        }
        let Some(live) = found else {
            return;
        };
        filter_cell(ptr).fetch_sub(1, Ordering::Relaxed);
        let (objects, bytes) = scale(live.size, live.rate);
        let stack = &live.stack[..live.depth];
        let key = freed_key(stack, live.slot.labels as usize);
        let fstart = key as usize % FREED_CAP;
        let mut merged = false;
        for i in 0..PROBES {
            let f = &mut t.freed[(fstart + i) % FREED_CAP];
            if f.key == 0 {
                *f = Freed {
                    key,
                    depth: live.depth,
                    stack: live.stack,
                    labels: live.slot.labels,
                    objects,
                    bytes,
                };
                // The entry keeps the label set's count; the span name goes.
                to_release = SlotCopy {
                    labels: std::ptr::null(),
                    ..live.slot
                };
                merged = true;
                break;
            }
            if f.key == key && f.labels == live.slot.labels && f.stack[..f.depth] == *stack {
                f.objects += objects;
                f.bytes += bytes;
                to_release = live.slot;
                merged = true;
                break;
            }
        }
        if !merged {
            FREED_LOST.fetch_add(1, Ordering::Relaxed);
            to_release = live.slot;
        }
    }
    // SAFETY: the counts taken by copy_current for this sample and not kept by
    // a freed entry, released once, outside the lock.
    unsafe { release(&to_release) };
}

/// Entries that may appear between counting and copying a snapshot.
const SNAPSHOT_SLACK: usize = 1024;

/// Every live sample and freed aggregate, each with one more reference on its
/// label set and span name. The buffer is allocated inside the recorder guard
/// (so the snapshot does not sample itself) and before the lock is taken
/// (nothing may be allocated under it); entries that appear in between beyond
/// a slack are left for the next snapshot.
pub(crate) fn snapshot() -> Vec<Entry> {
    let tables = TABLES.load(Ordering::Acquire);
    let mut out = Vec::new();
    if tables.is_null() {
        return out;
    }
    unsampled(|| {
        let count = {
            let _g = lock();
            // SAFETY: as in `record`.
            let t = unsafe { &*tables };
            t.live.iter().filter(|l| l.ptr > 1).count()
                + t.freed.iter().filter(|f| f.key != 0).count()
        };
        out.reserve_exact(count + SNAPSHOT_SLACK);
        let _g = lock();
        // SAFETY: as in `record`.
        let t = unsafe { &*tables };
        let live = t.live.iter().filter(|l| l.ptr > 1).map(|l| Entry::Live(*l));
        let freed = t
            .freed
            .iter()
            .filter(|f| f.key != 0)
            .map(|f| Entry::Freed(*f));
        for e in live.chain(freed) {
            if out.len() == out.capacity() {
                break;
            }
            let (labels, span_name) = match &e {
                Entry::Live(l) => (l.slot.labels, l.slot.span_name),
                Entry::Freed(f) => (f.labels, std::ptr::null()),
            };
            // SAFETY: the table holds counts on these pointers, so they are
            // live; one more count each for the snapshot.
            unsafe {
                if !labels.is_null() {
                    std::sync::Arc::increment_strong_count(labels);
                }
                if !span_name.is_null() {
                    std::sync::Arc::increment_strong_count(span_name);
                }
            }
            out.push(e);
        }
    });
    out
}

/// How many samples are alive now.
pub(crate) fn live_count() -> usize {
    let tables = TABLES.load(Ordering::Acquire);
    if tables.is_null() {
        return 0;
    }
    let _g = lock();
    // SAFETY: as in `record`.
    unsafe { (*tables).live.iter().filter(|l| l.ptr > 1).count() }
}
