//! How long a provider's state lives: while a handle ([`TracerProvider`] or
//! [`Tracer`]) holds it or a recording span started by it is open, and no longer.
//!
//! Spans must not share a reference count: one count touched by every span start
//! and end would bounce one cache line between every core that records spans.
//! So each recording span counts its opening and its closing in counters striped
//! over cache lines (each thread adds to its own stripe), and the handles share an
//! ordinary `Arc<Owner>`. When the last handle goes, the owner *orphans* the
//! provider: it sets a flag bit in every stripe of the closing counter. From then
//! on no span can open (opening needs a handle), and a span that closes sees the
//! bit in the value its own increment replaced, which tells it to check whether it
//! was the last. Whoever finds every opened span closed frees the provider, under
//! a process-wide lock that also records which providers are still allocated, so
//! a check never reads a provider another thread has freed.
//!
//! Why no check comes too early or never comes: a close that precedes the orphan
//! bit on its stripe is seen by the owner's own check (made after setting every
//! bit); a close that follows it makes its own check afterwards. The last check in
//! lock order therefore sees every close, and frees the provider if all spans are
//! closed.
//!
//! A provider installed as the process-wide one is *pinned*: `global::tracer`
//! reaches it without a handle, so it is never freed.
//!
//! This module is the only one in `trace` with `unsafe` code: the provider pointer
//! a span or handle carries, and the one place that frees it.
//!
//! [`TracerProvider`]: crate::TracerProvider
//! [`Tracer`]: super::Tracer

use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;

use super::pipeline::Pipeline;
use crate::counter::{stripe, STRIPES};

/// Set in every stripe of the closing counter when the last handle is gone.
const ORPHANED: u64 = 1 << 63;

/// Opened and closed recording spans of one provider, and whether its last
/// handle is gone.
#[derive(Default)]
pub(crate) struct Lifetime {
    opened: [CachePadded<AtomicU64>; STRIPES],
    closed: [CachePadded<AtomicU64>; STRIPES],
    pinned: AtomicBool,
}

impl std::fmt::Debug for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifetime")
            .field("opened", &self.opened())
            .field("closed", &self.closed())
            .finish()
    }
}

impl Lifetime {
    /// Recording spans opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.iter().map(|s| s.load(SeqCst)).sum()
    }

    fn closed(&self) -> u64 {
        self.closed.iter().map(|s| s.load(SeqCst) & !ORPHANED).sum()
    }

    fn is_orphaned(&self) -> bool {
        self.closed[0].load(SeqCst) & ORPHANED != 0
    }
}

/// Providers allocated and not yet freed, by address. Frees happen only under
/// this lock, after checking the address is still here.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frees the provider at `ptr` if it is still allocated, orphaned, and every span
/// it opened has closed.
fn try_free(ptr: NonNull<Pipeline>) {
    let addr = ptr.as_ptr() as usize;
    let mut live = live();
    if !live.contains(&addr) {
        return;
    }
    // SAFETY: the address is registered, so the provider there is allocated, and
    // it cannot be freed while we hold the lock. (It may be a newer provider at a
    // reused address: the checks below then concern that one, which is just as
    // right.)
    let lifetime = &unsafe { ptr.as_ref() }.lifetime;
    if !lifetime.is_orphaned() || lifetime.closed() != lifetime.opened() {
        return;
    }
    live.remove(&addr);
    drop(live);
    // SAFETY: it was allocated by `Owner::new` with `Box`, no handle is left (it is
    // orphaned), every span that referred to it has closed, and no new span can
    // open without a handle; removing the address under the lock made this the
    // only free.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
}

/// The state every handle of one provider shares; the last one to drop shuts the
/// pipeline down and orphans the provider.
pub(crate) struct Owner {
    ptr: NonNull<Pipeline>,
}

// SAFETY: `Owner` only gives out `&Pipeline`, which is `Sync`.
unsafe impl Send for Owner {}
// SAFETY: as above.
unsafe impl Sync for Owner {}

impl Owner {
    /// Allocates `inner`; it lives until the owner is dropped and every span it
    /// opened has closed.
    pub(crate) fn new(inner: Pipeline) -> Owner {
        let ptr = NonNull::from(Box::leak(Box::new(inner)));
        live().insert(ptr.as_ptr() as usize);
        Owner { ptr }
    }

    /// The provider.
    #[inline]
    pub(crate) fn inner(&self) -> &Pipeline {
        // SAFETY: the provider is freed only once orphaned, which only this
        // owner's drop does.
        unsafe { self.ptr.as_ref() }
    }

    /// A handle that opens spans on this provider.
    #[inline]
    pub(crate) fn live(&self) -> Live<'_> {
        Live {
            inner: self.inner(),
            ptr: self.ptr,
        }
    }

    /// Pins the provider (it will never be freed) and returns a handle-free
    /// reference to it, for the process-wide provider.
    pub(crate) fn pin(&self) -> Pinned {
        self.inner().lifetime.pinned.store(true, SeqCst);
        Pinned { ptr: self.ptr }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let inner = self.inner();
        inner.on_last_handle();
        if inner.lifetime.pinned.load(SeqCst) {
            return;
        }
        for s in &inner.lifetime.closed {
            s.fetch_or(ORPHANED, SeqCst);
        }
        try_free(self.ptr);
    }
}

/// A provider that is never freed (it was installed as the process-wide one).
#[derive(Clone, Copy)]
pub(crate) struct Pinned {
    ptr: NonNull<Pipeline>,
}

impl Pinned {
    /// A handle that opens spans on this provider.
    #[inline]
    pub(crate) fn live(self) -> Live<'static> {
        Live {
            // SAFETY: a pinned provider is never freed.
            inner: unsafe { self.ptr.as_ref() },
            ptr: self.ptr,
        }
    }
}

/// The provider `global::tracer` records into; null when none is installed.
static CURRENT: AtomicPtr<Pipeline> = AtomicPtr::new(std::ptr::null_mut());

/// Makes `provider` the one [`current`] returns.
pub(crate) fn set_current(provider: Option<Pinned>) {
    let ptr = provider.map_or(std::ptr::null_mut(), |p| p.ptr.as_ptr());
    CURRENT.store(ptr, SeqCst);
}

/// The provider installed by [`set_current`], if any.
#[inline]
pub(crate) fn current() -> Option<Pinned> {
    NonNull::new(CURRENT.load(SeqCst)).map(|ptr| Pinned { ptr })
}

/// A provider that is alive for `'a`: what a tracer starts spans with.
#[derive(Clone, Copy)]
pub(crate) struct Live<'a> {
    inner: &'a Pipeline,
    ptr: NonNull<Pipeline>,
}

impl<'a> Live<'a> {
    /// The provider.
    #[inline]
    pub(crate) fn inner(&self) -> &'a Pipeline {
        self.inner
    }

    /// Counts a recording span open and returns its reference to the provider,
    /// which keeps the provider allocated until it drops.
    #[inline]
    pub(crate) fn open_span(&self) -> SpanRef {
        self.inner.lifetime.opened[stripe()].fetch_add(1, SeqCst);
        SpanRef { ptr: self.ptr }
    }
}

/// A recording span's reference to its provider. Dropping it counts the span
/// closed, after which the provider may be freed: it is the span's last use of
/// the provider (the span's own `Drop` runs before its fields are dropped).
pub(crate) struct SpanRef {
    ptr: NonNull<Pipeline>,
}

// SAFETY: `SpanRef` only gives out `&Pipeline`, which is `Sync`.
unsafe impl Send for SpanRef {}
// SAFETY: as above.
unsafe impl Sync for SpanRef {}

impl SpanRef {
    /// The provider.
    #[inline]
    pub(crate) fn get(&self) -> &Pipeline {
        // SAFETY: the span counted itself open before this reference existed and
        // counts itself closed only when the reference drops; until then the
        // provider is not freed.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for SpanRef {
    #[inline]
    fn drop(&mut self) {
        let prev = self.get().lifetime.closed[stripe()].fetch_add(1, SeqCst);
        if prev & ORPHANED != 0 {
            try_free(self.ptr);
        }
    }
}
