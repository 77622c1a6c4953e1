//! The uploader's pieces: a bounded queue that drops its oldest item, hands
//! items to one consumer until closed, counts what a shutdown deadline cuts off;
//! `send` accounting for every item; a worker thread with its own runtime whose
//! shutdown says what was not uploaded.
#![cfg(feature = "upload")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracewire::export::{Attempt, Backoff, ExportError};
use tracewire_transport::upload::{Names, PendingQueue, Worker};

const NAMES: Names = Names {
    thread: "transport-test-uploader",
    role: "uploader",
    items: "widgets",
};

fn quick() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
        max_elapsed: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_item_and_counts_it() {
    let q = PendingQueue::new("test", 2);
    for i in 1..=3 {
        q.push(i);
    }
    assert_eq!((q.len(), q.collected()), (2, 3));
    assert_eq!(q.counters().snapshot().dropped, 1);
    q.close();
    assert_eq!(q.pop().await, Some(2));
    assert_eq!(q.pop().await, Some(3));
    assert_eq!(q.pop().await, None);
}

#[tokio::test]
async fn pop_all_waits_for_items_and_ends_once_closed_and_empty() {
    let q = Arc::new(PendingQueue::new("test", 8));
    let consumer = tokio::spawn({
        let q = Arc::clone(&q);
        async move {
            let mut batches = Vec::new();
            while let Some(batch) = q.pop_all().await {
                batches.push(batch);
            }
            batches
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.push("a");
    q.push("b");
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.push("c");
    q.close();
    let batches = tokio::time::timeout(Duration::from_secs(2), consumer)
        .await
        .expect("the consumer ends once the queue is closed")
        .unwrap();
    assert_eq!(batches.concat(), ["a", "b", "c"]);
    assert!(batches.iter().all(|b| !b.is_empty()));
}

#[tokio::test]
async fn what_the_shutdown_deadline_leaves_queued_is_counted_as_dropped() {
    let q = PendingQueue::new("test", 8);
    q.push(1);
    q.push(2);
    assert!(!q.is_stopping());
    q.stop(Instant::now() + Duration::from_millis(50));
    assert!(q.is_stopping());
    q.stopping().await;
    let started = Instant::now();
    q.until_deadline(std::future::pending::<()>()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(q.is_empty());
    assert_eq!(q.counters().snapshot().dropped, 2);
}

#[tokio::test]
async fn send_counts_every_item_uploaded_refused_or_cut_off() {
    let q = PendingQueue::<()>::new("tracewire-transport-test", 8);
    assert!(
        q.send(3, &quick(), "3 widgets dropped", || async { Ok(()) })
            .await
    );

    let mut attempts = 0;
    let refused = q
        .send(2, &quick(), "2 widgets dropped", || {
            attempts += 1;
            let n = attempts;
            async move {
                Err(if n < 3 {
                    Attempt::Retry(ExportError::new("busy"))
                } else {
                    Attempt::Fail(ExportError::new("refused"))
                })
            }
        })
        .await;
    assert!(!refused);

    let cut_off = tokio::time::timeout(
        Duration::from_millis(50),
        q.send(4, &quick(), "4 widgets dropped", std::future::pending),
    )
    .await;
    assert!(cut_off.is_err());

    let c = q.counters().snapshot();
    assert_eq!(
        (c.exported, c.dropped, c.failed, c.retried),
        (3, 2 + 4, 2, 2)
    );
}

#[test]
fn a_worker_runs_on_a_runtime_of_its_own_and_its_shutdown_says_what_was_not_uploaded() {
    let queue = Arc::new(PendingQueue::<u32>::new(NAMES.thread, 8));
    let had_runtime = Arc::new(AtomicBool::new(false));
    let (q, seen) = (Arc::clone(&queue), Arc::clone(&had_runtime));
    let worker = Worker::spawn(NAMES, move || {
        seen.store(
            tokio::runtime::Handle::try_current().is_ok(),
            Ordering::SeqCst,
        );
        assert_eq!(
            std::thread::current().name(),
            Some("transport-test-uploader")
        );
        Ok(async move {
            let q2 = Arc::clone(&q);
            q.until_deadline(async move {
                q2.push(1);
                // An upload that never ends: the deadline cuts it off.
                let _item = q2.pop().await;
                q2.send(1, &Backoff::default(), "a widget dropped", || {
                    std::future::pending()
                })
                .await;
            })
            .await;
        })
    })
    .unwrap();
    assert!(had_runtime.load(Ordering::SeqCst));
    assert!(worker.is_running());
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let err = worker
        .shutdown(&queue, Duration::from_millis(100))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        err.to_string()
            .contains("1 widgets not uploaded at shutdown"),
        "{err}"
    );
    assert!(!worker.is_running());
    let again = worker.shutdown(&queue, Duration::from_secs(1)).unwrap_err();
    assert!(again.to_string().contains("already shut down"), "{again}");
    let c = queue.counters().snapshot();
    assert_eq!(
        (queue.collected(), c.exported, c.dropped, c.failed),
        (1, 0, 1, 1)
    );
}

#[test]
fn an_error_in_the_workers_setup_is_the_spawns_error() {
    let err = Worker::spawn(NAMES, || {
        Err::<std::future::Ready<()>, _>(tracewire_transport::Error::new("no client for you"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "no client for you");
}
