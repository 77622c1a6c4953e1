//! The per-thread slot the CPU profiler's signal handler (and the heap
//! profiler's allocator hook) reads, and the per-thread scope stack that decides
//! what the slot holds. This is the one place that knows the slot's layout:
//! `context`, `labels` and `profile` publish, copy, take and release through it
//! and never read each other's private types.
//!
//! # The scope stack
//!
//! Each thread has a stack of scopes. A scope is entered by
//! - [`enter`]: a context the stack owns ([`Context::attach`](crate::Context::attach)
//!   and every poll of an `InContext` future), exited with [`exit`] in any order;
//! - [`in_scope`]: a context *borrowed* for the length of a closure, no clone;
//! - [`with_frame`]: a label set borrowed for the length of a closure, no merge:
//!   the labels in effect are the context's merged with the frames above it, and
//!   the merged [`Context`] is built only when [`current`] or [`map_current`]
//!   asks for it (then kept in the frame for later calls).
//!
//! Borrowed scopes are closure-scoped, never guard-scoped, because a guard can be
//! `mem::forget`-ed in safe code: its borrow would end while the stack (and the
//! signal handler) still pointed at the borrowed value. A closure's scope ends
//! when it returns or unwinds, so closure-scoped entries nest like the call
//! stack; only owned entries (guards) can leave in any order. One that leaves
//! out of order becomes a tombstone, popped once it reaches the top; if label
//! frames above it are based on it, it keeps its context until then, since they
//! (and the published scope) point into it. Every entry carries a generation, so
//! an exit whose entry is gone (its index since reused) touches nothing.
//!
//! # The slot
//!
//! What a handler reads is a [`Scope`]: the current context's [`Record`] (its
//! label set, span ids and span name, built once per context) and up to
//! [`MAX_FRAMES`] label sets of the frames above it. The thread keeps two scopes
//! and an index of the published one. A new context is written into the other
//! scope and published by one store of the index; a frame is appended to the
//! published scope (its pointer first, then the count), and removed by lowering
//! the count. A handler interrupting the thread therefore sees the old state or
//! the new one, never a mix, and everything it can reach is kept alive by the
//! stack until the thread unpublishes it. Compiler fences keep these stores in
//! program order; the handler runs on the thread it interrupts, so no hardware
//! fence is needed.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{compiler_fence, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::labels::{LabelSet, LabelSetInner};
use crate::trace::Str;

/// Label frames ([`with_frame`]) a scope carries above its context; one more
/// frame builds the merged context right away (and takes no frame).
pub(crate) const MAX_FRAMES: usize = 4;

/// What the profiler reads of a context, built once when the context is made.
/// Its pointers borrow from the context that holds it (the label set's and the
/// span name's `Arc`s), so it lives and dies with them.
#[derive(Debug)]
pub(crate) struct Record {
    labels: *const LabelSetInner,
    span_name: *const Str,
    trace_id: u128,
    span_id: u64,
    local_root_span_id: u64,
}

// SAFETY: a `Record` is a read-only view of an `Arc<LabelSetInner>` and an
// `Arc<Str>` owned by the same context (both Send + Sync), plus plain integers.
unsafe impl Send for Record {}
// SAFETY: as above; nothing is written through its pointers.
unsafe impl Sync for Record {}

impl Record {
    /// The record of a context holding `labels` and `span_name`, whose span has
    /// these ids (0: none). The caller keeps both alive as long as the record.
    pub(crate) fn new(
        labels: &LabelSet,
        span_name: Option<&Arc<Str>>,
        trace_id: u128,
        span_id: u64,
        local_root_span_id: u64,
    ) -> Record {
        Record {
            labels: labels.as_ptr(),
            span_name: span_name.map_or(std::ptr::null(), Arc::as_ptr),
            trace_id,
            span_id,
            local_root_span_id,
        }
    }
}

/// One published state: a context's record (null: no context) and the label
/// frames above it. Written only by its thread, read by its signal handler.
struct Scope {
    record: AtomicPtr<Record>,
    frames: AtomicUsize,
    frame: [AtomicPtr<LabelSetInner>; MAX_FRAMES],
}

impl Scope {
    const fn new() -> Scope {
        Scope {
            record: AtomicPtr::new(std::ptr::null_mut()),
            frames: AtomicUsize::new(0),
            frame: [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_FRAMES],
        }
    }
}

struct Slot {
    scopes: [Scope; 2],
    /// Which of `scopes` is published (0 or 1).
    published: AtomicUsize,
    /// The heap hook's last merged set (see [`copy_merged`]); only ever touched
    /// by the thread's own code, never by a signal handler.
    heap: HeapCache,
}

/// The label sets of one published scope (the context's, then the frames') and
/// their merge. It holds one count on each, so its pointers cannot be reused
/// for other sets while it holds them; it is emptied whenever a frame ends, so
/// the samples of one frame share one merged set (and one entry per stack in
/// the heap profiler's table of freed samples), and none outlives its frames.
struct HeapCache {
    key: [Cell<*const LabelSetInner>; 1 + MAX_FRAMES],
    merged: Cell<*const LabelSetInner>,
}

impl HeapCache {
    const fn new() -> HeapCache {
        HeapCache {
            key: [const { Cell::new(std::ptr::null()) }; 1 + MAX_FRAMES],
            merged: Cell::new(std::ptr::null()),
        }
    }

    /// Gives back what the cache holds, if anything.
    #[inline(always)]
    fn clear(&self) {
        if !self.merged.get().is_null() {
            self.release();
        }
    }

    #[cold]
    #[inline(never)]
    fn release(&self) {
        // Emptied before the counts are given back: freeing may run the
        // allocator, which may look at the cache.
        let merged = self.merged.replace(std::ptr::null());
        let key: [*const LabelSetInner; 1 + MAX_FRAMES] =
            std::array::from_fn(|i| self.key[i].replace(std::ptr::null()));
        // SAFETY: the cache held one count on each of these.
        unsafe {
            release_labels(merged);
            for p in key {
                release_labels(p);
            }
        }
    }
}

impl Slot {
    #[inline(always)]
    fn published(&self) -> &Scope {
        &self.scopes[self.published.load(Ordering::Relaxed) & 1]
    }

    /// Publishes a scope: `write` fills the scope that is not published, which is
    /// then published with one store.
    #[inline(always)]
    fn publish_with(&self, write: impl FnOnce(&Scope)) {
        let next = (self.published.load(Ordering::Relaxed) ^ 1) & 1;
        write(&self.scopes[next]);
        // Everything the scope points to, and the scope itself, is written before
        // a handler can see it.
        compiler_fence(Ordering::SeqCst);
        self.published.store(next, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }
}

thread_local! {
    // Const-initialised and without a destructor: reading it is a plain
    // thread-pointer-relative load, safe from a signal handler and from inside
    // the allocator at any point of the thread's life.
    static SLOT: Slot = const {
        Slot {
            scopes: [Scope::new(), Scope::new()],
            published: AtomicUsize::new(0),
            heap: HeapCache::new(),
        }
    };
}

/// The calling thread's slot.
#[inline(always)]
fn slot() -> &'static Slot {
    // SAFETY: `SLOT` has no destructor, so it lives as long as its thread, and
    // the reference never leaves this module's functions, which run on that
    // thread (and return before it ends).
    SLOT.with(|s| unsafe { &*(s as *const Slot) })
}

/// A scope's content, as the stack computes it.
struct ScopeValue {
    record: *const Record,
    frames: usize,
    frame: [*const LabelSetInner; MAX_FRAMES],
}

impl ScopeValue {
    const EMPTY: ScopeValue = ScopeValue {
        record: std::ptr::null(),
        frames: 0,
        frame: [std::ptr::null(); MAX_FRAMES],
    };
}

/// Publishes `v`.
fn publish(v: &ScopeValue) {
    slot().publish_with(|scope| {
        scope.record.store(v.record.cast_mut(), Ordering::Relaxed);
        for (dst, src) in scope.frame.iter().zip(&v.frame[..v.frames]) {
            dst.store(src.cast_mut(), Ordering::Relaxed);
        }
        scope.frames.store(v.frames, Ordering::Relaxed);
    });
}

/// Publishes a context with no frame.
#[inline(always)]
fn publish_record(record: *const Record) {
    slot().publish_with(|scope| {
        scope.record.store(record.cast_mut(), Ordering::Relaxed);
        scope.frames.store(0, Ordering::Relaxed);
    });
}

/// How many frames the published scope holds.
#[inline(always)]
fn published_frames() -> usize {
    slot().published().frames.load(Ordering::Relaxed)
}

/// Appends `labels` as frame number `n` of the published scope (which holds `n`):
/// the pointer first, then the count.
#[inline(always)]
fn publish_frame(n: usize, labels: *const LabelSetInner) {
    let scope = slot().published();
    scope.frame[n].store(labels.cast_mut(), Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    scope.frames.store(n + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// Removes the published scope's last frame.
#[inline(always)]
fn unpublish_frame() {
    let scope = slot().published();
    let n = scope.frames.load(Ordering::Relaxed);
    scope.frames.store(n.saturating_sub(1), Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------
// The scope stack.

/// What a stack entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    /// A context the stack owns, in `Entry::ctx`.
    Owned,
    /// A context borrowed by [`in_scope`] until its closure returns
    /// (`Entry::ptr` is the `*const Context`).
    Borrowed,
    /// A label set borrowed by [`with_frame`] until its closure returns
    /// (`Entry::ptr` is the `*const LabelSet`), above the context entry at
    /// `Entry::base`.
    Frame,
    /// Exited out of order; popped once it reaches the top. `Entry::ctx` keeps
    /// a guard's context while frames above still name it as their base.
    Removed,
}

const NO_BASE: usize = usize::MAX;

struct Entry {
    generation: u64,
    tag: Tag,
    /// `Owned` (and `Removed`): the context; otherwise empty.
    ctx: Context,
    /// `Borrowed`: the context; `Frame`: the label set; otherwise null.
    ptr: *const (),
    /// `Frame`: the index of the context entry below it (`NO_BASE`: none).
    base: usize,
    /// `Frame`: the base's context with the frames' labels, once built (it is
    /// never empty then); otherwise empty.
    merged: Context,
}

struct Stack {
    entries: Vec<Entry>,
    generation: u64,
    /// Contexts to drop once the stack is no longer borrowed (dropping one may end
    /// a span, which runs span processors, which may enter contexts).
    graveyard: Vec<Context>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Unpublish before the contexts are freed, so the profiler never reads a
        // dangling slot during thread exit.
        publish(&ScopeValue::EMPTY);
        slot().heap.clear();
    }
}

thread_local! {
    static STACK: RefCell<Stack> = const {
        RefCell::new(Stack {
            entries: Vec::new(),
            generation: 0,
            graveyard: Vec::new(),
        })
    };
}

static EMPTY: Context = Context::new();

/// Names an entry of the calling thread's stack: its index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    index: usize,
    generation: u64,
}

impl Ticket {
    /// No entry (the thread's stack was gone).
    const NONE: Ticket = Ticket {
        index: usize::MAX,
        generation: u64::MAX,
    };

    /// The entry's depth in the stack.
    pub(crate) fn depth(&self) -> usize {
        self.index
    }
}

impl Stack {
    #[inline(always)]
    fn push(&mut self, tag: Tag, ctx: Context, ptr: *const (), base: usize) -> Ticket {
        let generation = self.generation;
        self.generation = generation.wrapping_add(1);
        if self.entries.len() == self.entries.capacity() {
            self.grow();
        }
        // Written in place (`Vec::push` builds the entry on the stack and copies
        // it, which costs more than the rest of the push).
        let index = self.entries.len();
        self.entries.spare_capacity_mut()[0].write(Entry {
            generation,
            tag,
            ctx,
            ptr,
            base,
            merged: Context::new(),
        });
        // SAFETY: the entry at `index` was just initialised, within capacity.
        unsafe { self.entries.set_len(index + 1) };
        Ticket { index, generation }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.entries.reserve(8);
    }

    /// Pops the top entry (which must exist) and returns the context it held:
    /// a frame's merged context, an owned context, or the empty one.
    #[inline(always)]
    fn pop_top(&mut self) -> Context {
        let top = self.entries.len() - 1;
        let e = &mut self.entries[top];
        let ctx = std::mem::take(&mut e.ctx);
        let merged = std::mem::take(&mut e.merged);
        // SAFETY: what the entry owned was taken out just above (the rest is
        // plain data), so shortening the vector leaks nothing.
        unsafe { self.entries.set_len(top) };
        if merged.inner_is_some() {
            merged
        } else {
            ctx
        }
    }

    /// The context of entry `i`, if it is a context entry.
    #[inline(always)]
    fn context_at(&self, i: usize) -> Option<&Context> {
        let e = self.entries.get(i)?;
        match e.tag {
            Tag::Owned | Tag::Removed => Some(&e.ctx),
            // SAFETY: a `Borrowed` entry exists only while `in_scope`'s closure
            // runs, for the whole of which the context is borrowed.
            Tag::Borrowed => Some(unsafe { &*e.ptr.cast::<Context>() }),
            Tag::Frame => None,
        }
    }

    /// The label set of frame entry `e`.
    fn frame_labels(e: &Entry) -> Option<&LabelSet> {
        // SAFETY: a `Frame` entry exists only while `with_frame`'s closure runs,
        // for the whole of which its set is borrowed.
        (e.tag == Tag::Frame).then(|| unsafe { &*e.ptr.cast::<LabelSet>() })
    }

    /// What the top entry publishes.
    fn scope_of_top(&self) -> ScopeValue {
        let Some(top) = self.entries.len().checked_sub(1) else {
            return ScopeValue::EMPTY;
        };
        let base = match self.entries[top].tag {
            Tag::Frame => self.entries[top].base,
            _ => top,
        };
        let mut v = ScopeValue {
            record: self
                .context_at(base)
                .map_or(std::ptr::null(), Context::record_ptr),
            ..ScopeValue::EMPTY
        };
        let first = if base == NO_BASE { 0 } else { base + 1 };
        // Between a frame and its base there are only frames, as many as a
        // scope holds (closure-scoped entries nest; `with_frame` enters a merged
        // context past `MAX_FRAMES`).
        for labels in self.entries[first..].iter().filter_map(Stack::frame_labels) {
            if v.frames < MAX_FRAMES {
                v.frame[v.frames] = labels.as_ptr();
                v.frames += 1;
            }
        }
        v
    }

    /// Builds (once) the merged context of the top entry if it is a frame.
    fn materialize_top(&mut self) {
        let Some(top) = self.entries.len().checked_sub(1) else {
            return;
        };
        let e = &self.entries[top];
        if e.tag != Tag::Frame || e.merged.inner_is_some() {
            return;
        }
        // The frames between the base and the top, merged in order (the later
        // wins), over the nearest context: the base's, or a lower frame's merged
        // context if one was built already.
        let base = e.base;
        let first = if base == NO_BASE { 0 } else { base + 1 };
        let mut from = first;
        let mut under: &Context = self.context_at(base).unwrap_or(&EMPTY);
        for i in (first..top).rev() {
            let e = &self.entries[i];
            if e.tag == Tag::Frame && e.merged.inner_is_some() {
                under = &e.merged;
                from = i + 1;
                break;
            }
        }
        let mut labels = LabelSet::empty();
        for l in self.entries[from..=top]
            .iter()
            .filter_map(Stack::frame_labels)
        {
            labels = labels.merge(l);
        }
        let merged = under.with_labels(labels);
        self.entries[top].merged = merged;
    }

    /// The current context (the top's, merged if the top is a frame): call
    /// [`Stack::materialize_top`] first.
    #[inline]
    fn top_context(&self) -> &Context {
        match self.entries.last() {
            Some(e) if e.tag == Tag::Frame => &e.merged,
            Some(_) => self.context_at(self.entries.len() - 1).unwrap_or(&EMPTY),
            None => &EMPTY,
        }
    }
}

/// The calling thread's stack; `None` once it is gone (the thread is exiting).
#[inline(always)]
fn stack() -> Option<&'static RefCell<Stack>> {
    // SAFETY: the reference never leaves this module's functions, none of which
    // holds it across code that could run the thread's TLS destructors.
    STACK
        .try_with(|s| unsafe { &*(s as *const RefCell<Stack>) })
        .ok()
}

/// Makes `ctx` current, owned by the stack, until [`exit`].
#[inline]
pub(crate) fn enter(ctx: Context) -> Ticket {
    let Some(s) = stack() else {
        // The thread is exiting and its stack is gone: nothing to attach to.
        return Ticket::NONE;
    };
    let mut s = s.borrow_mut();
    let record = ctx.record_ptr();
    let t = s.push(Tag::Owned, ctx, std::ptr::null(), NO_BASE);
    publish_record(record);
    t
}

/// Ends the scope `t` names, in any order, and returns what the caller must
/// drop (or keep; empty if nothing): the context [`enter`] took, or a frame's
/// merged context. A context entered with `enter` and exited while frames above
/// still use it stays in the stack until they end.
#[inline]
pub(crate) fn exit(t: Ticket) -> Context {
    let Some(cell) = stack() else {
        return Context::new();
    };
    let mut s = cell.borrow_mut();
    // The common case: `t` is the top, and the entry below it is live (and a
    // context entry, unless the top is a frame, which it was pushed on).
    let i = t.index;
    let len = s.entries.len();
    if i >= len || i + 1 != len {
        drop(s);
        return exit_slow(t);
    }
    let e = &s.entries[i];
    let below = i.checked_sub(1).map(|b| s.entries[b].tag);
    if e.generation != t.generation
        || e.tag == Tag::Removed
        || below == Some(Tag::Removed)
        || (e.tag != Tag::Frame && below == Some(Tag::Frame))
    {
        drop(s);
        return exit_slow(t);
    }
    if e.tag == Tag::Frame {
        // The published scope less its last frame is the entry below's.
        unpublish_frame();
        slot().heap.clear();
    } else {
        let record = i
            .checked_sub(1)
            .and_then(|b| s.context_at(b))
            .map_or(std::ptr::null(), Context::record_ptr);
        publish_record(record);
    }
    let out = s.pop_top();
    drop(s);
    out
}

/// [`exit`] out of order, or onto entries exited out of order.
#[cold]
#[inline(never)]
fn exit_slow(t: Ticket) -> Context {
    let Some(cell) = stack() else {
        return Context::new();
    };
    let mut guard = cell.borrow_mut();
    let s = &mut *guard;
    match s.entries.get(t.index) {
        Some(e) if e.generation == t.generation && e.tag != Tag::Removed => {}
        // Already gone: nothing of ours to remove.
        _ => return Context::new(),
    }
    if t.index + 1 < s.entries.len() {
        // Out of order: something entered later is current, and stays so. A
        // guard's context stays while the frames above it are based on it.
        let next = &s.entries[t.index + 1];
        let used_above = next.tag == Tag::Frame && next.base == t.index;
        let e = &mut s.entries[t.index];
        let tag = std::mem::replace(&mut e.tag, Tag::Removed);
        e.ptr = std::ptr::null();
        return match tag {
            Tag::Owned if used_above => Context::new(),
            Tag::Owned => std::mem::take(&mut e.ctx),
            Tag::Frame => std::mem::take(&mut e.merged),
            Tag::Borrowed | Tag::Removed => Context::new(),
        };
    }
    let popped = s.entries.pop().expect("the entry was found above");
    slot().heap.clear();
    while s.entries.last().is_some_and(|e| e.tag == Tag::Removed) {
        if let Some(e) = s.entries.pop() {
            if e.ctx.inner_is_some() {
                // Freed after the new top is published.
                s.graveyard.push(e.ctx);
            }
        }
    }
    publish(&s.scope_of_top());
    let bury = !s.graveyard.is_empty();
    drop(guard);
    if bury {
        loop {
            let c = cell.borrow_mut().graveyard.pop();
            match c {
                Some(c) => drop(c),
                None => break,
            }
        }
    }
    if popped.tag == Tag::Frame {
        popped.merged
    } else {
        popped.ctx
    }
}

/// Exits on drop, also while unwinding.
struct Exit(Ticket);

impl Drop for Exit {
    #[inline]
    fn drop(&mut self) {
        drop(exit(self.0));
    }
}

/// Runs `f` with `ctx` current, borrowed: no reference count is touched.
#[inline]
pub(crate) fn in_scope<R>(ctx: &Context, f: impl FnOnce() -> R) -> R {
    let t = match stack() {
        Some(s) => {
            let mut s = s.borrow_mut();
            let t = s.push(
                Tag::Borrowed,
                Context::new(),
                (ctx as *const Context).cast(),
                NO_BASE,
            );
            publish_record(ctx.record_ptr());
            t
        }
        // The thread is exiting and its stack is gone.
        None => Ticket::NONE,
    };
    let _exit = Exit(t);
    f()
}

/// Runs `f` with the current labels merged with `labels`, borrowed: nothing is
/// merged or allocated unless the merged context is asked for.
#[inline]
pub(crate) fn with_frame<R>(labels: &LabelSet, f: impl FnOnce() -> R) -> R {
    if labels.is_empty() {
        return f();
    }
    let t = match stack() {
        Some(s) => {
            let mut s = s.borrow_mut();
            let n = published_frames();
            if n < MAX_FRAMES {
                let base = match s.entries.last() {
                    None => NO_BASE,
                    Some(top) if top.tag == Tag::Frame => top.base,
                    Some(_) => s.entries.len() - 1,
                };
                let t = s.push(
                    Tag::Frame,
                    Context::new(),
                    (labels as *const LabelSet).cast(),
                    base,
                );
                publish_frame(n, labels.as_ptr());
                t
            } else {
                drop(s);
                // Frames full: the merged context, owned.
                enter(map_current(|c| c.with_labels(labels.clone())))
            }
        }
        // The thread is exiting and its stack is gone.
        None => Ticket::NONE,
    };
    let _exit = Exit(t);
    f()
}

/// Runs `f` with the current context (the empty one if none), building the
/// merged context of label frames if needed. `f` must not enter or exit scopes.
#[inline]
pub(crate) fn map_current<R>(f: impl FnOnce(&Context) -> R) -> R {
    let Some(s) = stack() else {
        // The thread is exiting.
        return f(&EMPTY);
    };
    let unmerged = s
        .borrow()
        .entries
        .last()
        .is_some_and(|e| e.tag == Tag::Frame && !e.merged.inner_is_some());
    if unmerged {
        s.borrow_mut().materialize_top();
    }
    f(s.borrow().top_context())
}

/// A clone of the current context.
pub(crate) fn current() -> Context {
    map_current(Context::clone)
}

// ---------------------------------------------------------------------------------
// Copies of the slot.

/// What a sample records of the scope that was current when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotCopy {
    /// The context's label set, with one reference count taken for the sample
    /// (null: none). Whoever consumes the copy must release it with [`take`],
    /// [`release`] or [`release_labels`].
    pub(crate) labels: *const LabelSetInner,
    /// The label sets of the frames above the context, in order (the later wins
    /// on a shared key), one count taken on each; null where there is none.
    /// Always null in a [`copy_merged`] copy.
    pub(crate) frames: [*const LabelSetInner; MAX_FRAMES],
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
        frames: [std::ptr::null(); MAX_FRAMES],
        span_name: std::ptr::null(),
        trace_id: 0,
        span_id: 0,
        local_root_span_id: 0,
    };
}

/// Copies the calling thread's slot. Async-signal-safe: a few loads and one
/// atomic increment per label set and span name.
///
/// # Safety
/// Must run on the thread whose slot is read, either as that thread's code or in
/// a signal handler that interrupted it. What the slot points to is then kept
/// alive by the thread's scope stack until the thread itself unpublishes it,
/// which cannot happen while this function runs.
#[inline(always)]
pub(crate) unsafe fn copy_current() -> SlotCopy {
    SLOT.with(|s| {
        let scope = &s.scopes[s.published.load(Ordering::Relaxed) & 1];
        let mut copy = SlotCopy::EMPTY;
        let record = scope.record.load(Ordering::Relaxed);
        if !record.is_null() {
            // SAFETY: per this function's contract the published record is alive,
            // and it is immutable.
            let r = unsafe { &*record };
            if !r.labels.is_null() {
                // SAFETY: `labels` comes from a live `Arc<LabelSetInner>` held by
                // the context; one more count is a single atomic increment.
                unsafe { Arc::increment_strong_count(r.labels) };
            }
            if !r.span_name.is_null() {
                // SAFETY: as above, for the context's `Arc<Str>`.
                unsafe { Arc::increment_strong_count(r.span_name) };
            }
            copy.labels = r.labels;
            copy.span_name = r.span_name;
            copy.trace_id = r.trace_id;
            copy.span_id = r.span_id;
            copy.local_root_span_id = r.local_root_span_id;
        }
        let n = scope.frames.load(Ordering::Relaxed).min(MAX_FRAMES);
        for (dst, src) in copy.frames.iter_mut().zip(&scope.frame[..n]) {
            let p = src.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: a published frame's set is borrowed by a `with_frame`
                // call still running on this thread.
                unsafe { Arc::increment_strong_count(p) };
            }
            *dst = p;
        }
        copy
    })
}

/// Copies the calling thread's slot with the frames' labels merged into
/// [`SlotCopy::labels`] (frames left null), for the heap profiler, whose tables
/// keep one label set per sample. Merging allocates when there are frames over
/// a labelled context (or several frames), once per frame and set of labels
/// (the merge is kept until a frame ends): call it where the allocations it
/// makes are not themselves sampled.
///
/// # Safety
/// As [`copy_current`], on the calling thread's own code (not in a signal
/// handler).
pub(crate) unsafe fn copy_merged() -> SlotCopy {
    // SAFETY: per this function's contract.
    let mut copy = unsafe { copy_current() };
    let key: [*const LabelSetInner; 1 + MAX_FRAMES] = std::array::from_fn(|i| {
        if i == 0 {
            copy.labels
        } else {
            copy.frames[i - 1]
        }
    });
    let sets = key.iter().filter(|p| !p.is_null()).count();
    if sets > 1 {
        let cache = &slot().heap;
        let hit =
            !cache.merged.get().is_null() && cache.key.iter().zip(&key).all(|(c, k)| c.get() == *k);
        if hit {
            let merged = cache.merged.get();
            // SAFETY: the counts copy_current took on the scope's sets are not
            // needed (the merge stands for them); the cache holds one on the
            // merge, so it is alive, and the copy takes one more.
            unsafe {
                for p in key {
                    release_labels(p);
                }
                Arc::increment_strong_count(merged);
            }
            copy.labels = merged;
        } else {
            // SAFETY: the scope's sets are alive (published, and counted by the
            // copy): one more count each for the cache. Then the copy's counts
            // are taken over once by the merge.
            let merged = unsafe {
                for &p in key.iter().filter(|p| !p.is_null()) {
                    Arc::increment_strong_count(p);
                }
                take_labels(&copy)
            };
            let p = merged.as_ptr();
            // SAFETY: `merged` is alive: one count for the cache, while its own
            // goes to the copy.
            unsafe { Arc::increment_strong_count(p) };
            std::mem::forget(merged);
            cache.clear();
            for (c, k) in cache.key.iter().zip(key) {
                c.set(k);
            }
            cache.merged.set(p);
            copy.labels = p;
        }
    } else if let Some(&only) = copy.frames.iter().find(|p| !p.is_null()) {
        // One set, a frame's: its count moves to `labels`.
        copy.labels = only;
    }
    copy.frames = [std::ptr::null(); MAX_FRAMES];
    copy
}

/// Gives back the reference counts a [`SlotCopy`] holds.
///
/// # Safety
/// The copy must come from [`copy_current`] or [`copy_merged`], and its counts
/// be released once.
pub(crate) unsafe fn release(copy: &SlotCopy) {
    // SAFETY: per the contract, these are the counts the copy took.
    unsafe {
        release_labels(copy.labels);
        for &f in &copy.frames {
            release_labels(f);
        }
        if !copy.span_name.is_null() {
            Arc::decrement_strong_count(copy.span_name);
        }
    }
}

/// Gives back one reference count on a label set.
///
/// # Safety
/// `labels` must be null or carry a count taken by [`copy_current`], released
/// exactly once.
pub(crate) unsafe fn release_labels(labels: *const LabelSetInner) {
    if !labels.is_null() {
        // SAFETY: per the contract, this is a count the copy took.
        unsafe { Arc::decrement_strong_count(labels) };
    }
}

/// Takes over the label-set counts of a copy as one merged set.
///
/// # Safety
/// Once per copy; the copy's label-set counts then belong to the result.
unsafe fn take_labels(copy: &SlotCopy) -> LabelSet {
    let mut labels = LabelSet::empty();
    for &p in std::iter::once(&copy.labels).chain(&copy.frames) {
        if p.is_null() {
            continue;
        }
        // SAFETY: per the contract, this count belongs to the caller now.
        let set = LabelSet::from_arc(unsafe { Arc::from_raw(p) });
        labels = if labels.is_empty() {
            set
        } else {
            labels.merge(&set)
        };
    }
    labels
}

/// Takes over the reference counts of a [`SlotCopy`] as owned values: the
/// labels current when it was taken (the context's merged with the frames') and
/// the span name.
///
/// # Safety
/// Once per copy from [`copy_current`] or [`copy_merged`]; the copy's counts
/// then belong to the result.
pub(crate) unsafe fn take(copy: &SlotCopy) -> (LabelSet, Option<Arc<Str>>) {
    // SAFETY: per the contract.
    let labels = unsafe { take_labels(copy) };
    let name = if copy.span_name.is_null() {
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { Arc::from_raw(copy.span_name) })
    };
    (labels, name)
}

/// The published scope: the context's record and the frames' label sets.
#[cfg(test)]
pub(crate) fn published() -> (*const Record, Vec<*const LabelSetInner>) {
    SLOT.with(|s| {
        let scope = &s.scopes[s.published.load(Ordering::Relaxed)];
        let n = scope.frames.load(Ordering::Relaxed);
        (
            scope.record.load(Ordering::Relaxed).cast_const(),
            scope.frame[..n]
                .iter()
                .map(|p| p.load(Ordering::Relaxed).cast_const())
                .collect(),
        )
    })
}

/// Entries in the calling thread's stack (live or waiting to be popped).
#[cfg(test)]
pub(crate) fn depth() -> usize {
    STACK.with(|s| s.borrow().entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&'static str, &'static str)]) -> LabelSet {
        LabelSet::new(pairs.iter().copied())
    }

    /// The labels a sample taken now would carry.
    fn sampled() -> LabelSet {
        // SAFETY: on the calling thread; the copy's counts are taken over once.
        unsafe { take(&copy_current()).0 }
    }

    fn current_labels() -> String {
        Context::current().labels().to_string()
    }

    #[test]
    fn a_borrowed_scope_is_published_only_while_its_closure_runs() {
        let ctx = Context::new().with_labels(set(&[("k", "v")]));
        let count = ctx.labels().strong_count();
        ctx.in_scope(|| {
            assert_eq!(published(), (ctx.record_ptr(), vec![]));
            assert_eq!(current_labels(), "k=v");
            // Nothing was cloned to enter.
            assert_eq!(ctx.labels().strong_count(), count);
        });
        assert_eq!(published(), (std::ptr::null(), vec![]));
        assert_eq!(depth(), 0);
    }

    #[test]
    fn frames_are_published_over_the_context_and_merged_only_when_asked() {
        let parent = Context::new().with_labels(set(&[("service", "api"), ("k", "p")]));
        let a = set(&[("k", "a"), ("job", "purge")]);
        let b = set(&[("k", "b")]);
        let _g = parent.clone().attach();
        with_frame(&a, || {
            assert_eq!(published(), (parent.record_ptr(), vec![a.as_ptr()]));
            assert_eq!(sampled().to_string(), "job=purge,k=a,service=api");
            with_frame(&b, || {
                assert_eq!(
                    published(),
                    (parent.record_ptr(), vec![a.as_ptr(), b.as_ptr()])
                );
                assert_eq!(sampled().to_string(), "job=purge,k=b,service=api");
                assert_eq!(current_labels(), "job=purge,k=b,service=api");
                // Built once, then kept in the frame.
                let first = Context::current();
                assert_eq!(first.record_ptr(), Context::current().record_ptr());
            });
            // The outer frame's context was not built: merging is lazy.
            assert_eq!(published(), (parent.record_ptr(), vec![a.as_ptr()]));
            assert_eq!(current_labels(), "job=purge,k=a,service=api");
        });
        assert_eq!(published(), (parent.record_ptr(), vec![]));
        assert_eq!(current_labels(), "k=p,service=api");
    }

    #[test]
    fn frames_past_the_limit_enter_a_merged_context() {
        let sets: Vec<LabelSet> = (0..MAX_FRAMES + 3)
            .map(|i| {
                LabelSet::new([
                    (format!("l{i}"), "1".to_string()),
                    ("k".into(), format!("{i}")),
                ])
            })
            .collect();
        fn nest(sets: &[LabelSet], i: usize) {
            if i == sets.len() {
                return;
            }
            with_frame(&sets[i], || {
                let labels = Context::current().labels().clone();
                assert_eq!(labels.len(), i + 2, "{labels}");
                assert_eq!(labels.get("k"), Some(format!("{i}").as_str()));
                assert_eq!(sampled(), labels);
                assert!(published().1.len() <= MAX_FRAMES);
                nest(sets, i + 1);
                assert_eq!(sampled(), labels);
            });
        }
        nest(&sets, 0);
        assert_eq!(depth(), 0);
        assert_eq!(published(), (std::ptr::null(), vec![]));
    }

    #[test]
    fn a_guard_dropped_inside_a_frame_keeps_its_context_until_the_frame_ends() {
        let ctx = Context::new().with_labels(set(&[("service", "api")]));
        let record = ctx.record_ptr();
        let service = ctx.labels().clone();
        let g = ctx.attach();
        let job = set(&[("job", "a")]);
        let job_ptr = job.as_ptr();
        with_frame(&job, move || {
            drop(g);
            // The frame is based on the guard's context: it stays (held by the
            // stack, not by anyone else) as long as the frame does.
            assert_eq!(published(), (record, vec![job_ptr]));
            assert_eq!(current_labels(), "job=a,service=api");
            assert_eq!(sampled().to_string(), "job=a,service=api");
        });
        assert_eq!(depth(), 0);
        assert_eq!(published(), (std::ptr::null(), vec![]));
        assert_eq!(service.strong_count(), 1, "the guard's context was freed");
    }

    #[test]
    fn a_guard_leaked_out_of_a_borrowed_scope_outlives_the_borrowed_context() {
        let borrowed = Context::new().with_labels(set(&[("who", "borrowed")]));
        let attached = Context::new().with_labels(set(&[("who", "attached")]));
        let g = borrowed.in_scope(|| attached.clone().attach());
        // The borrowed context may go now: nothing points at it any more.
        drop(borrowed);
        assert_eq!(published(), (attached.record_ptr(), vec![]));
        assert_eq!(current_labels(), "who=attached");
        drop(g);
        assert_eq!(depth(), 0);
        assert_eq!(published(), (std::ptr::null(), vec![]));
    }

    #[test]
    fn a_guard_forgotten_inside_a_frame_leaves_no_pointer_to_the_frame() {
        let attached = Context::new().with_labels(set(&[("who", "forgotten")]));
        let labels = attached.labels().clone();
        let sampled_after = std::thread::spawn(move || {
            let job = set(&[("job", "a")]);
            with_frame(&job, || std::mem::forget(attached.attach()));
            // The frame's set is gone; the forgotten context stays current (and
            // owned by the thread's stack).
            drop(job);
            assert_eq!(published().1, vec![]);
            assert_eq!(current_labels(), "who=forgotten");
            sampled().to_string()
        })
        .join()
        .unwrap();
        assert_eq!(sampled_after, "who=forgotten");
        // The thread's stack freed the forgotten context when the thread ended.
        assert_eq!(labels.strong_count(), 1);
    }

    #[test]
    fn an_exit_whose_entry_is_gone_touches_nothing() {
        let a = Context::new().with_labels(set(&[("k", "a")]));
        let b = Context::new().with_labels(set(&[("k", "b")]));
        let ta = enter(a);
        drop(exit(ta));
        // Same index, another generation.
        let tb = enter(b.clone());
        assert_eq!(tb.depth(), ta.depth());
        assert!(!exit(ta).inner_is_some());
        assert_eq!(current_labels(), "k=b");
        assert_eq!(published(), (b.record_ptr(), vec![]));
        drop(exit(tb));
        assert_eq!(depth(), 0);
    }

    /// What the stack should say, kept by a model of its rules: the current
    /// context is the top's; a frame's is the nearest context below it (exited
    /// or not) merged with the frames above that.
    #[derive(Default)]
    struct Model {
        entries: Vec<(bool, LabelSet, bool)>, // (is a frame, labels, exited)
    }

    impl Model {
        fn push(&mut self, frame: bool, labels: &LabelSet) -> usize {
            self.entries.push((frame, labels.clone(), false));
            self.entries.len() - 1
        }
        fn exit(&mut self, i: usize) {
            self.entries[i].2 = true;
            while self.entries.last().is_some_and(|e| e.2) {
                self.entries.pop();
            }
        }
        fn current(&self) -> LabelSet {
            let mut frames = Vec::new();
            for (frame, labels, _) in self.entries.iter().rev() {
                if !frame {
                    let mut out = labels.clone();
                    for f in frames.iter().rev() {
                        out = out.merge(f);
                    }
                    return out;
                }
                frames.push(labels.clone());
            }
            frames
                .iter()
                .rev()
                .fold(LabelSet::empty(), |acc, f| acc.merge(f))
        }
    }

    struct Driver {
        rng: u64,
        model: Model,
        sets: Vec<LabelSet>,
        contexts: Vec<Context>,
        guards: Vec<(crate::ContextGuard, usize)>,
        steps: usize,
    }

    impl Driver {
        fn next(&mut self, n: u64) -> usize {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng % n) as usize
        }

        fn check(&self) {
            let want = self.model.current();
            assert_eq!(
                Context::current().labels(),
                &want,
                "after {} steps",
                self.steps
            );
            assert_eq!(sampled(), want, "sampled, after {} steps", self.steps);
        }

        fn run(&mut self, level: usize) {
            for _ in 0..self.next(5) {
                self.steps += 1;
                match self.next(6) {
                    0 | 1 => {
                        let c = self.next(self.contexts.len() as u64);
                        let i = self.model.push(false, self.contexts[c].labels());
                        self.guards.push((self.contexts[c].clone().attach(), i));
                    }
                    2 if !self.guards.is_empty() => {
                        let g = self.next(self.guards.len() as u64);
                        let (guard, i) = self.guards.swap_remove(g);
                        drop(guard);
                        self.model.exit(i);
                    }
                    3 if level < 8 => {
                        let c = self.next(self.contexts.len() as u64);
                        let c = self.contexts[c].clone();
                        let i = self.model.push(false, c.labels());
                        c.in_scope(|| self.run(level + 1));
                        self.model.exit(i);
                    }
                    4 | 5 if level < 8 => {
                        let s = self.next(self.sets.len() as u64);
                        let s = self.sets[s].clone();
                        let i = self.model.push(true, &s);
                        with_frame(&s, || self.run(level + 1));
                        self.model.exit(i);
                    }
                    _ => {}
                }
                self.check();
            }
        }
    }

    #[test]
    fn random_nesting_and_out_of_order_guards_match_the_model() {
        let sets: Vec<LabelSet> = (0..4)
            .map(|i| {
                LabelSet::new([
                    ("k".to_string(), format!("f{i}")),
                    (format!("f{i}"), "1".into()),
                ])
            })
            .collect();
        let contexts: Vec<Context> = (0..3)
            .map(|i| {
                Context::new().with_labels(LabelSet::new([
                    ("k".to_string(), format!("c{i}")),
                    (format!("c{i}"), "1".into()),
                ]))
            })
            .chain([Context::new()])
            .collect();
        let mut d = Driver {
            rng: 0x9e37_79b9_7f4a_7c15,
            model: Model::default(),
            sets,
            contexts,
            guards: Vec::new(),
            steps: 0,
        };
        for _ in 0..3000 {
            d.run(0);
            // Guards left over from this round drop in a random order.
            while !d.guards.is_empty() {
                let g = d.next(d.guards.len() as u64);
                let (guard, i) = d.guards.swap_remove(g);
                drop(guard);
                d.model.exit(i);
                d.check();
            }
            assert_eq!(depth(), 0);
        }
        assert!(d.steps > 10_000, "{} steps", d.steps);
        assert_eq!(published(), (std::ptr::null(), vec![]));
    }
}
