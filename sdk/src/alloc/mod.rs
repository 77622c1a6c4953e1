//! A labelled heap profiler: which handler, label set and span hold the memory.
//!
//! Install [`Profiled`] as the binary's global allocator, around the allocator it
//! already uses:
//!
//! ```
//! use std::alloc::System;
//! use tracewire::alloc::{HeapProfile, Profiled};
//!
//! #[global_allocator]
//! static ALLOC: Profiled<System> = Profiled::new(System);
//!
//! let kept: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 64 * 1024]).collect();
//! let heap = HeapProfile::take();
//! // About 4 MiB in use, estimated from the sampled blocks.
//! assert!(heap.inuse_space() > 1 << 20);
//! # drop(kept);
//! let mut out = Vec::new();
//! heap.write_pprof(&mut out).unwrap(); // go tool pprof -sample_index=inuse_space
//! ```
//!
//! As Go's heap profile: an allocation is sampled on average once every
//! [`sample_rate`] bytes (default 512 KiB, Go's `MemProfileRate`), chosen at
//! random so that no allocation size is favoured; a sampled block records its
//! stack (frame pointers, walked in the allocator, not in a signal handler), the
//! labels and span current on its thread, and is matched when freed, so in-use
//! figures are right. Counts are scaled to estimate all allocations, as Go does
//! (`1 / (1 - e^(-size/rate))` blocks per sample). Unlike Go's, every sample
//! carries the labels ([`with_labels`](crate::labels::with_labels), the HTTP
//! layer's `http-path`, the gRPC layer's `grpc-method`) and the span (`trace_id`,
//! `span_id`, `span_name`, while blocks are in use).
//!
//! [`HeapProfile::write_pprof`] writes `alloc_objects`, `alloc_space`,
//! `inuse_objects` and `inuse_space` (Go's names and units); `/debug/pprof/heap`
//! and `/debug/pprof/allocs` of `tracewire-http` serve them.
//!
//! Bounds: at most 16,384 sampled blocks alive at once (8 GiB of live heap at the
//! default rate) and 4,096 distinct stack and label pairs of freed samples;
//! beyond, samples are counted in [`HeapStats`] and the profile says so. The
//! recorder allocates nothing (its tables are mapped once, 10 MiB of address
//! space, touched as used) and never samples its own work. Linux only: elsewhere
//! `Profiled` only forwards to the inner allocator.

#![deny(unsafe_code)]

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod record;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::labels::LabelSet;
use crate::profile::pprof;
use crate::trace::{SpanId, Str, TraceId};

/// A global allocator that samples the allocations of `A` for the heap profile.
/// See the [module docs](self).
#[derive(Debug, Default, Clone, Copy)]
pub struct Profiled<A> {
    inner: A,
}

impl<A> Profiled<A> {
    /// Wraps `inner` (e.g. [`std::alloc::System`], or jemalloc / mimalloc).
    pub const fn new(inner: A) -> Self {
        Profiled { inner }
    }
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `inner` with the caller's arguments and
// returns its result; the recorder only reads the pointers (as numbers) and
// never touches the blocks.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiled<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if record::crosses(layout.size()) {
            // SAFETY: the caller's contract is the inner allocator's.
            let p = unsafe { self.inner.alloc(layout) };
            record::on_sampled(p, layout.size());
            return p;
        }
        // SAFETY: as above.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if record::crosses(layout.size()) {
            // SAFETY: as for `alloc`.
            let p = unsafe { self.inner.alloc_zeroed(layout) };
            record::on_sampled(p, layout.size());
            return p;
        }
        // SAFETY: as for `alloc`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Forgotten before the block is given back: once freed, its address may
        // be handed out (and sampled) again on another thread.
        #[cfg(target_os = "linux")]
        record::on_free(ptr);
        // SAFETY: as for `alloc`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        {
            record::on_free(ptr);
            if record::crosses(new_size) {
                // SAFETY: as for `alloc`.
                let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
                record::on_sampled(p, new_size);
                return p;
            }
        }
        // SAFETY: as for `alloc`.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Whether a [`Profiled`] allocator is the global allocator (always false
/// outside Linux).
pub fn is_installed() -> bool {
    #[cfg(target_os = "linux")]
    {
        // The recorder marks itself installed on the first allocation it sees;
        // this one tells if nothing was allocated yet.
        drop(std::hint::black_box(Box::new(0u64)));
        record::INSTALLED.load(Ordering::Relaxed) != 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Sets the mean sampling interval in bytes (Go's `runtime.MemProfileRate`;
/// default 512 KiB). `0` stops sampling; blocks already sampled stay tracked
/// until freed.
pub fn set_sample_rate(bytes: usize) {
    #[cfg(target_os = "linux")]
    record::RATE.store(bytes, Ordering::Relaxed);
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// The mean sampling interval in bytes (0: off).
pub fn sample_rate() -> usize {
    #[cfg(target_os = "linux")]
    {
        record::RATE.load(Ordering::Relaxed)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// What the heap profiler could not record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Sampled blocks alive now.
    pub live_samples: u64,
    /// Samples not recorded: the table of live samples was full.
    pub dropped_samples: u64,
    /// Freed samples whose counts were lost: the table of freed stacks was full
    /// (the `alloc_*` figures miss them; `inuse_*` are unaffected).
    pub freed_samples_lost: u64,
}

/// The heap profiler's counters now.
pub fn stats() -> HeapStats {
    #[cfg(target_os = "linux")]
    {
        HeapStats {
            live_samples: record::live_count() as u64,
            dropped_samples: record::DROPPED.load(Ordering::Relaxed),
            freed_samples_lost: record::FREED_LOST.load(Ordering::Relaxed),
        }
    }
    #[cfg(not(target_os = "linux"))]
    HeapStats::default()
}

/// One stack, label set and span of a [`HeapProfile`], with its estimated
/// counts.
#[derive(Clone, Debug)]
pub struct HeapSample {
    /// Return addresses, innermost first (allocator frames left out).
    pub stack: Vec<usize>,
    /// The labels current when the blocks were allocated.
    pub labels: LabelSet,
    /// The trace of the span current then (blocks still in use only).
    pub trace_id: Option<TraceId>,
    /// That span (blocks still in use only).
    pub span_id: Option<SpanId>,
    span_name: Option<Arc<Str>>,
    /// Blocks allocated (estimated), freed or not.
    pub alloc_objects: i64,
    /// Bytes allocated (estimated), freed or not.
    pub alloc_space: i64,
    /// Blocks in use (estimated).
    pub inuse_objects: i64,
    /// Bytes in use (estimated).
    pub inuse_space: i64,
}

impl HeapSample {
    /// The span name recorded with the blocks, if any.
    pub fn span_name(&self) -> Option<&str> {
        self.span_name.as_deref().map(|s| &**s)
    }

    fn key(&self) -> SampleKey {
        (
            self.stack.clone(),
            self.labels.to_string(),
            self.trace_id,
            self.span_id,
        )
    }
}

/// What samples are aggregated by: stack, labels, span.
type SampleKey = (Vec<usize>, String, Option<TraceId>, Option<SpanId>);

/// Which figure `go tool pprof` shows first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// `inuse_space`, as `/debug/pprof/heap`.
    InuseSpace,
    /// `alloc_space`, as `/debug/pprof/allocs`.
    AllocSpace,
}

/// A snapshot of the heap profile. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct HeapProfile {
    samples: Vec<HeapSample>,
    rate: usize,
    time: SystemTime,
    stats: HeapStats,
}

impl HeapProfile {
    /// The heap profile now: every sampled block alive, and the freed ones'
    /// counts, aggregated by stack, labels and span. Empty when [`Profiled`] is
    /// not the global allocator.
    pub fn take() -> HeapProfile {
        // What taking the profile allocates is not sampled: the profile shows
        // the program, not its own making.
        #[cfg(target_os = "linux")]
        return record::unsampled(Self::take_now);
        #[cfg(not(target_os = "linux"))]
        Self::take_now()
    }

    fn take_now() -> HeapProfile {
        let mut samples: HashMap<SampleKey, HeapSample> = HashMap::new();
        #[cfg(target_os = "linux")]
        {
            for e in record::snapshot() {
                let s = sample_of(e);
                match samples.entry(s.key()) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let t = o.get_mut();
                        t.alloc_objects += s.alloc_objects;
                        t.alloc_space += s.alloc_space;
                        t.inuse_objects += s.inuse_objects;
                        t.inuse_space += s.inuse_space;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(s);
                    }
                }
            }
        }
        HeapProfile {
            samples: samples.into_values().collect(),
            rate: sample_rate(),
            time: SystemTime::now(),
            stats: stats(),
        }
    }

    /// The samples.
    pub fn samples(&self) -> &[HeapSample] {
        &self.samples
    }

    /// The estimated bytes in use.
    pub fn inuse_space(&self) -> i64 {
        self.samples.iter().map(|s| s.inuse_space).sum()
    }

    /// The estimated bytes allocated since the program started (or since
    /// `earlier`, for a [`delta`](Self::delta)).
    pub fn alloc_space(&self) -> i64 {
        self.samples.iter().map(|s| s.alloc_space).sum()
    }

    /// Bytes in use per value of label `key` (samples without it left out).
    pub fn inuse_by_label(&self, key: &str) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        for s in &self.samples {
            if let Some(v) = s.labels.get(key) {
                *out.entry(v.to_owned()).or_default() += s.inuse_space;
            }
        }
        out
    }

    /// What changed since `earlier` (Go's `?seconds=N` profiles): every figure
    /// is this one's minus `earlier`'s, per stack, labels and span.
    pub fn delta(&self, earlier: &HeapProfile) -> HeapProfile {
        let mut by_key: HashMap<_, HeapSample> =
            self.samples.iter().map(|s| (s.key(), s.clone())).collect();
        for e in &earlier.samples {
            let s = by_key.entry(e.key()).or_insert_with(|| HeapSample {
                alloc_objects: 0,
                alloc_space: 0,
                inuse_objects: 0,
                inuse_space: 0,
                ..e.clone()
            });
            s.alloc_objects -= e.alloc_objects;
            s.alloc_space -= e.alloc_space;
            s.inuse_objects -= e.inuse_objects;
            s.inuse_space -= e.inuse_space;
        }
        HeapProfile {
            samples: by_key
                .into_values()
                .filter(|s| s.alloc_objects != 0 || s.inuse_objects != 0 || s.inuse_space != 0)
                .collect(),
            rate: self.rate,
            time: earlier.time,
            stats: self.stats,
        }
    }

    /// What the profiler could not record when the snapshot was taken.
    pub fn stats(&self) -> HeapStats {
        self.stats
    }

    /// The profile in pprof form, `default` shown first by `go tool pprof`.
    pub fn to_pprof(&self, default: SampleType) -> pprof::Profile {
        let mut b = pprof::Builder::new(
            &[
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
            ],
            ("space", "bytes"),
            self.rate as i64,
        );
        // Allocator frames inlined into the caller's code stay out of its
        // location too (whole allocator locations were left out of the stack).
        #[cfg(target_os = "linux")]
        b.hide_in_leaf(is_allocator_function);
        for s in &self.samples {
            // The stacks hold return addresses only (no interrupted instruction):
            // a leading 0 marks that for the builder, which treats entries after
            // the first as return addresses.
            let mut stack = Vec::with_capacity(s.stack.len() + 1);
            stack.push(s.stack.first().map_or(0, |a| a.saturating_sub(1)));
            stack.extend(s.stack.iter().skip(1));
            b.labelled_sample(
                &stack,
                vec![
                    s.alloc_objects,
                    s.alloc_space,
                    s.inuse_objects,
                    s.inuse_space,
                ],
                &s.labels,
                (s.trace_id, s.span_id, s.span_name()),
            );
        }
        if self.stats.dropped_samples > 0 || self.stats.freed_samples_lost > 0 {
            b.comment(&format!(
                "tracewire: {} samples not recorded (live table full), {} freed samples' counts lost",
                self.stats.dropped_samples, self.stats.freed_samples_lost
            ));
        }
        b.profile.default_sample_type = b.string(match default {
            SampleType::InuseSpace => "inuse_space",
            SampleType::AllocSpace => "alloc_space",
        });
        b.profile.time_nanos = self
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        b.profile
    }

    /// Writes the profile as gzip'd pprof with `inuse_space` shown first (use
    /// [`to_pprof`](Self::to_pprof) for `alloc_space`).
    pub fn write_pprof(&self, w: impl Write) -> io::Result<()> {
        self.to_pprof(SampleType::InuseSpace).write_gzip(w)
    }
}

/// A snapshot entry as a sample, taking over the references it holds.
#[cfg(target_os = "linux")]
fn sample_of(e: record::Entry) -> HeapSample {
    use crate::profile::sampler::{take, SlotCopy};
    match e {
        record::Entry::Live(l) => {
            let (objects, bytes) = record::scale(l.size, l.rate);
            #[allow(unsafe_code)]
            // SAFETY: the snapshot took one count on each pointer for us.
            let (labels, span_name) = unsafe { take(&l.slot) };
            HeapSample {
                stack: allocator_frames_removed(&l.stack[..l.depth]),
                labels,
                trace_id: (l.slot.trace_id != 0).then(|| TraceId::from_u128(l.slot.trace_id)),
                span_id: (l.slot.span_id != 0).then(|| SpanId::from_u64(l.slot.span_id)),
                span_name,
                alloc_objects: objects.round() as i64,
                alloc_space: bytes.round() as i64,
                inuse_objects: objects.round() as i64,
                inuse_space: bytes.round() as i64,
            }
        }
        record::Entry::Freed(f) => {
            let slot = SlotCopy {
                labels: f.labels,
                ..SlotCopy::EMPTY
            };
            #[allow(unsafe_code)]
            // SAFETY: the snapshot took one count on the label set for us.
            let (labels, _) = unsafe { take(&slot) };
            HeapSample {
                stack: allocator_frames_removed(&f.stack[..f.depth]),
                labels,
                trace_id: None,
                span_id: None,
                span_name: None,
                alloc_objects: f.objects.round() as i64,
                alloc_space: f.bytes.round() as i64,
                inuse_objects: 0,
                inuse_space: 0,
            }
        }
    }
}

/// Whether `name` is a function of the allocation path: the global allocator's
/// entry points, `alloc::alloc`, `RawVec`'s growth, this module.
#[cfg(target_os = "linux")]
fn is_allocator_function(n: &str) -> bool {
    n.starts_with("tracewire::alloc::")
        || n.starts_with("<tracewire::alloc::")
        || n.starts_with("__rust_")
        || n.starts_with("__rustc::__rust_")
        || n.starts_with("__rdl_")
        || n.starts_with("alloc::alloc::")
        || n.starts_with("<alloc::alloc::Global")
        || n.starts_with("std::alloc::")
        || n.starts_with("<std::alloc::System as core::alloc::global::GlobalAlloc>")
        || n.starts_with("alloc::raw_vec::")
        || n.starts_with("<alloc::raw_vec::")
}

/// The stack without its innermost allocator frames (the global allocator's
/// entry points, `alloc::alloc`, this module), as Go hides `mallocgc`.
#[cfg(target_os = "linux")]
fn allocator_frames_removed(stack: &[usize]) -> Vec<usize> {
    let is_allocator = |addr: usize| {
        let frames = crate::profile::resolve(addr.saturating_sub(1));
        !frames.is_empty() && frames.iter().all(|f| is_allocator_function(&f.function))
    };
    let skip = stack.iter().take_while(|&&a| is_allocator(a)).count();
    stack[skip..].to_vec()
}
