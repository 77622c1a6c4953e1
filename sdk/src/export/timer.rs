//! A process-wide timer thread that wakes futures at their deadlines: for waits
//! that must end on time whatever polls them (any executor, or a runtime without
//! timers) and whatever the export thread is doing (stuck in an exporter, gone).
//!
//! Started on first use; one thread for the whole process. Each entry is removed
//! when it fires, so an entry lives at most until its deadline.

use std::sync::{Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::time::Instant;

struct Timer {
    entries: Mutex<Vec<(Instant, Waker)>>,
    changed: Condvar,
}

static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();

fn timer() -> Option<&'static Timer> {
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            entries: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }));
        let started = std::thread::Builder::new()
            .name("tracewire-timer".into())
            .spawn(move || run(timer));
        match started {
            Ok(_) => Some(timer),
            Err(e) => {
                eprintln!("tracewire: cannot start the timer thread ({e}); flush deadlines are not enforced");
                None
            }
        }
    })
}

/// Wakes `waker` at `deadline` (or soon after).
pub(crate) fn wake_at(deadline: Instant, waker: Waker) {
    let Some(timer) = timer() else {
        return;
    };
    let mut entries = timer.entries.lock().unwrap_or_else(|e| e.into_inner());
    let earliest = entries.iter().all(|(at, _)| deadline < *at);
    entries.push((deadline, waker));
    drop(entries);
    if earliest {
        timer.changed.notify_one();
    }
}

fn run(timer: &'static Timer) {
    let mut entries = timer.entries.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let (due, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut *entries)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        *entries = pending;
        if !due.is_empty() {
            drop(entries);
            for (_, waker) in due {
                waker.wake();
            }
            entries = timer.entries.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        entries = match entries.iter().map(|(at, _)| *at).min() {
            None => timer
                .changed
                .wait(entries)
                .unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                let (guard, _) = timer
                    .changed
                    .wait_timeout(entries, wait)
                    .unwrap_or_else(|e| e.into_inner());
                guard
            }
        };
    }
}
