//! `labels::with_labels` borrows its set and `Context::in_scope` its context: what
//! is current inside them, what spawned work inherits, and that nesting, panics
//! and guards leaked out of them leave the thread as it was.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard};

use tracewire::labels::{self, LabelSet};
use tracewire::{Context, ContextExt, TracerProvider};

/// `labels::live_sets` counts the whole process: the tests of this file take
/// turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn parent() -> Context {
    Context::new().with_labels(LabelSet::new([("service", "api"), ("http-path", "/")]))
}

fn handler() -> LabelSet {
    LabelSet::new([("http-path", "/user"), ("worker", "purge")])
}

fn now() -> String {
    labels::current().to_string()
}

#[test]
fn context_current_inside_with_labels_is_the_parent_with_the_labels_merged() {
    let _s = serial();
    let provider = TracerProvider::builder().build();
    let span = provider.tracer("t").start("GET /user");
    let span_id = span.span_context().span_id();
    let _g = parent().with_span(span).attach();
    labels::with_labels(handler(), || {
        let ctx = Context::current();
        assert_eq!(
            ctx.labels().to_string(),
            "http-path=/user,service=api,worker=purge"
        );
        assert_eq!(ctx.span().span_context().span_id(), span_id, "span kept");
        assert_eq!(now(), "http-path=/user,service=api,worker=purge");
    });
    assert_eq!(now(), "http-path=/,service=api");
}

#[test]
fn nested_with_labels_merge_in_order_and_restore_on_the_way_out() {
    let _s = serial();
    let _g = parent().attach();
    let levels: Vec<LabelSet> = (0..10)
        .map(|i| {
            LabelSet::new([
                ("depth".to_string(), format!("{i}")),
                (format!("l{i}"), "x".into()),
            ])
        })
        .collect();
    fn nest(levels: &[LabelSet], i: usize) {
        let Some(set) = levels.get(i) else { return };
        labels::with_labels(set, || {
            let cur = labels::current();
            assert_eq!(cur.get("depth"), Some(format!("{i}").as_str()));
            assert_eq!(cur.get("service"), Some("api"));
            assert_eq!(cur.len(), 4 + i, "{cur}");
            nest(levels, i + 1);
            assert_eq!(labels::current(), cur);
        });
    }
    nest(&levels, 0);
    assert_eq!(now(), "http-path=/,service=api");
}

#[test]
fn in_scope_and_with_labels_nest_either_way() {
    let _s = serial();
    let a = Context::new().with_labels(LabelSet::new([("ctx", "a")]));
    let b = Context::new().with_labels(LabelSet::new([("ctx", "b")]));
    let job = LabelSet::new([("job", "1")]);
    a.in_scope(|| {
        assert_eq!(now(), "ctx=a");
        labels::with_labels(&job, || {
            assert_eq!(now(), "ctx=a,job=1");
            // A context made current replaces the labels, frames included.
            b.in_scope(|| {
                assert_eq!(now(), "ctx=b");
                labels::with_labels(&job, || assert_eq!(now(), "ctx=b,job=1"));
                assert_eq!(now(), "ctx=b");
            });
            assert_eq!(now(), "ctx=a,job=1");
        });
        assert_eq!(now(), "ctx=a");
    });
    assert!(labels::current().is_empty());
}

#[test]
fn a_panic_inside_nested_scopes_restores_the_outer_context() {
    let _s = serial();
    let _g = parent().attach();
    let inner = Context::new().with_labels(LabelSet::new([("k", "inner")]));
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        labels::with_labels(handler(), || {
            inner.in_scope(|| labels::with_labels(handler(), || panic!("handler failed")))
        })
    }));
    assert!(r.is_err());
    assert_eq!(now(), "http-path=/,service=api");
}

#[test]
fn a_guard_returned_out_of_in_scope_stays_current_until_it_drops() {
    let _s = serial();
    let borrowed = Context::new().with_labels(LabelSet::new([("who", "borrowed")]));
    let attached = Context::new().with_labels(LabelSet::new([("who", "attached")]));
    let guard = borrowed.in_scope(|| attached.attach());
    drop(borrowed);
    assert_eq!(now(), "who=attached");
    drop(guard);
    assert!(labels::current().is_empty());
}

#[test]
fn spawned_work_inherits_the_merged_labels() {
    let _s = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _g = parent().attach();
    let (task, blocking, thread, future) = labels::with_labels(handler(), || {
        let _rt = rt.enter();
        let task = tracewire::spawn(async {
            tokio::task::yield_now().await;
            now()
        });
        let blocking = tracewire::spawn_blocking(now);
        let thread = tracewire::spawn_thread(now).join().unwrap();
        let future = async { now() }.in_current_context();
        (task, blocking, thread, future)
    });
    let want = "http-path=/user,service=api,worker=purge";
    assert_eq!(rt.block_on(task).unwrap(), want);
    assert_eq!(rt.block_on(blocking).unwrap(), want);
    assert_eq!(thread, want);
    // Polled outside the frame, it still carries what was current when made.
    assert_eq!(rt.block_on(future), want);
}

#[test]
fn no_label_set_outlives_its_scopes() {
    let _s = serial();
    let baseline = labels::live_sets().expect("the live-set counter counts in debug builds");
    {
        let parent = parent();
        let set = handler();
        for _ in 0..100 {
            parent.in_scope(|| {
                labels::with_labels(&set, || {
                    // Built on demand, dropped with the frame.
                    assert_eq!(labels::current().len(), 3);
                    labels::with_labels(LabelSet::new([("iter", "x")]), || {
                        let _ = Context::current();
                    });
                })
            });
        }
    }
    assert_eq!(labels::live_sets().unwrap(), baseline);
}
