//! What the profiler's tests and benchmark share: CPU burnt on purpose, and turns
//! for the tests of one binary (one CPU profile at a time per process).
#![allow(dead_code)]

use std::hint::black_box;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tracewire::profile;

/// One CPU profile at a time per process: the tests of a binary take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spins for `cpu` of this thread's CPU time.
#[inline(never)]
pub fn burn_cpu(cpu: Duration) {
    let start = profile::thread_cpu_time().unwrap();
    let mut x = 0u64;
    while profile::thread_cpu_time().unwrap() - start < cpu {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    black_box(x);
}

/// `go`, if installed. Under CI (`CI=true`) it must be: the test fails without it.
pub fn go_tool() -> Option<String> {
    let found = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("go".into());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but `go` is not installed"
    );
    eprintln!("go not installed: skipping the go tool pprof check");
    None
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Allocates `total` bytes in blocks of `block`, kept (for the heap tests).
#[inline(never)]
pub fn allocate_blocks(total: usize, block: usize) -> Vec<Vec<u8>> {
    (0..total / block)
        .map(|i| black_box(vec![i as u8; block]))
        .collect()
}

/// Whether `got` is within `tolerance` (a fraction) of `want`.
pub fn within(got: i64, want: i64, tolerance: f64) -> bool {
    (got as f64 - want as f64).abs() <= want as f64 * tolerance
}
