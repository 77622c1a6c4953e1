//! What the SIGPROF handler does on the interrupted thread: copy the thread's
//! current labels and span ids out of the slot, without locking, allocating or
//! calling the dynamic loader.

// Used by the CPU profiler and by this module's tests.
#![allow(dead_code)]

use std::sync::Arc;

use crate::labels::{slot, LabelSetInner};

/// What a sample records of the context that was current when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotCopy {
    /// The label set, with one reference count taken for the sample (null: none).
    /// Whoever consumes the copy must release it with [`release_labels`].
    pub(crate) labels: *const LabelSetInner,
    /// The current span's trace id (0: no span).
    pub(crate) trace_id: u128,
    /// The current span's span id (0: no span).
    pub(crate) span_id: u64,
}

impl SlotCopy {
    pub(crate) const EMPTY: SlotCopy = SlotCopy {
        labels: std::ptr::null(),
        trace_id: 0,
        span_id: 0,
    };
}

/// Copies the calling thread's slot. Async-signal-safe: a few loads and, when there
/// are labels, one atomic increment.
///
/// # Safety
/// Must run on the thread whose context is read, either as that thread's code or
/// in a signal handler that interrupted it. The slot then points at a context that
/// the thread's context stack keeps alive until the thread itself unpublishes it,
/// which cannot happen while this function runs.
#[inline(always)]
pub(crate) unsafe fn copy_current() -> SlotCopy {
    let ctx = slot::current_ptr();
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
    let (trace_id, span_id) = match &ctx.span {
        Some(span) => {
            let sc = span.span_context();
            (sc.trace_id().to_u128(), sc.span_id().to_u64())
        }
        None => (0, 0),
    };
    SlotCopy {
        labels,
        trace_id,
        span_id,
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

/// Takes back the reference count of a [`SlotCopy`] as a `LabelSet`.
///
/// # Safety
/// Same as [`release_labels`]: once per copy.
pub(crate) unsafe fn take_labels(labels: *const LabelSetInner) -> crate::labels::LabelSet {
    if labels.is_null() {
        return crate::labels::LabelSet::empty();
    }
    // SAFETY: per the contract, this count belongs to the caller now.
    crate::labels::LabelSet::from_arc(unsafe { Arc::from_raw(labels) })
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
            // SAFETY: the count was taken just above and is not stored anywhere.
            unsafe { release_labels(copy.labels) };
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
            if i % 2 == 0 {
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
        // SAFETY: the count taken by copy_current, released once.
        let labels = unsafe { take_labels(copy.labels) };
        assert_eq!(labels.get("a"), Some("b"));
    }
}
