//! Context and labels follow async work on a multi-thread runtime: across `.await`,
//! worker-thread migration and `tracewire::spawn`, never leaking into other tasks.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use futures_util::FutureExt as _;
use tracewire::labels::{self, LabelSet};
use tracewire::{Context, ContextExt};

fn label(key: &str) -> Option<String> {
    labels::current().get(key).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_follow_a_task_that_moves_between_worker_threads() {
    let threads = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let threads = threads.clone();
        let set = LabelSet::new([("task", format!("{t}"))]);
        tasks.push(tokio::spawn(
            async move {
                // At least 200 polls, and on until the tasks have run on both
                // workers (a loaded machine may leave one worker idle for a while).
                for i in 0..1_000_000 {
                    let seen = {
                        let mut threads = threads.lock().unwrap();
                        threads.insert(std::thread::current().id());
                        threads.len()
                    };
                    assert_eq!(label("task"), Some(t.to_string()));
                    if i >= 200 && seen == 2 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            .with_labels(set),
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        threads.lock().unwrap().len(),
        2,
        "tasks ran on both workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlabelled_tasks_never_see_another_tasks_labels() {
    let labelled: Vec<_> = (0..4)
        .map(|t| {
            tokio::spawn(
                async move {
                    for _ in 0..500 {
                        tokio::task::yield_now().await;
                    }
                }
                .with_labels(LabelSet::new([("task", format!("{t}"))])),
            )
        })
        .collect();
    let plain: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async {
                for _ in 0..500 {
                    assert!(
                        labels::current().is_empty(),
                        "leaked: {}",
                        labels::current()
                    );
                    assert!(!Context::current().has_span());
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in labelled.into_iter().chain(plain) {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracewire_spawn_and_spawn_blocking_carry_the_callers_context() {
    let ctx = Context::new().with_labels(LabelSet::new([("http-path", "/user")]));
    let (spawned, blocking, plain) = async {
        let spawned = tracewire::spawn(async {
            tokio::task::yield_now().await;
            label("http-path")
        });
        let blocking = tracewire::spawn_blocking(|| label("http-path"));
        // tokio::spawn alone does not carry it (Rust tasks do not inherit context).
        let plain = tokio::spawn(async { label("http-path") });
        (spawned.await, blocking.await, plain.await)
    }
    .in_context(ctx)
    .await;
    assert_eq!(spawned.unwrap().as_deref(), Some("/user"));
    assert_eq!(blocking.unwrap().as_deref(), Some("/user"));
    assert_eq!(plain.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_is_restored_after_a_poll_that_panics() {
    let outer = Context::new().with_labels(LabelSet::new([("k", "outer")]));
    let _g = outer.attach();
    let inner = Context::new().with_labels(LabelSet::new([("k", "inner")]));
    let result = AssertUnwindSafe(
        async {
            tokio::task::yield_now().await;
            assert_eq!(label("k").as_deref(), Some("inner"));
            panic!("handler failed");
        }
        .in_context(inner),
    )
    .catch_unwind()
    .await;
    assert!(result.is_err());
    assert_eq!(label("k").as_deref(), Some("outer"));
    // And a fresh task on this runtime sees nothing of either.
    let seen = tokio::spawn(async { labels::current() }).await.unwrap();
    assert!(seen.is_empty());
}

#[test]
fn nested_in_context_futures_restore_in_order() {
    let a = Context::new().with_labels(LabelSet::new([("k", "a")]));
    let b = Context::new().with_labels(LabelSet::new([("k", "b")]));
    futures_executor_block_on(
        async move {
            assert_eq!(label("k").as_deref(), Some("a"));
            async { assert_eq!(label("k").as_deref(), Some("b")) }
                .in_context(b)
                .await;
            assert_eq!(label("k").as_deref(), Some("a"));
        }
        .in_context(a),
    );
    assert!(labels::current().is_empty());
}

fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Two tasks on one thread (a current-thread runtime's `LocalSet`) each attach a
/// guard and hold it across `.await`s, a misuse (`in_context` is the way), and
/// drop it while the other task's guard sits above it in the thread's stack.
/// Neither may pop the other's context: after every `.await` each task is in its
/// own context, and once both are done the thread is back to none.
#[test]
fn guards_held_across_awaits_by_two_tasks_never_pop_each_others_context() {
    use std::cell::RefCell;
    use std::rc::Rc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let task = |name: &'static str, log: Rc<RefCell<Vec<String>>>| {
        let own = Context::new().with_labels(LabelSet::new([("task", name)]));
        let held = Context::new().with_labels(LabelSet::new([("task", name), ("held", "yes")]));
        async move {
            let check = |step: &str| {
                assert_eq!(label("task").as_deref(), Some(name), "{name} {step}");
                log.borrow_mut().push(format!("{name} {step}"));
            };
            let guard = held.attach();
            assert_eq!(label("held").as_deref(), Some("yes"));
            tokio::task::yield_now().await;
            check("after the first await");
            tokio::task::yield_now().await;
            check("after the second await");
            drop(guard);
            check("after dropping its guard");
            tokio::task::yield_now().await;
            check("after the last await");
        }
        .in_context(own)
    };
    rt.block_on(local.run_until(async {
        let a = tokio::task::spawn_local(task("a", log.clone()));
        let b = tokio::task::spawn_local(task("b", log.clone()));
        a.await.unwrap();
        b.await.unwrap();
    }));
    // The tasks interleaved, so each dropped its guard out of order.
    let log = log.borrow();
    assert_eq!(log.len(), 8);
    assert!(
        log[..2].iter().any(|l| l.starts_with('a')) && log[..2].iter().any(|l| l.starts_with('b')),
        "{log:?}"
    );
    assert!(labels::current().is_empty());
    assert!(!Context::current().has_span());
}
