//! The main thread's frame-pointer chain ends in libc's start code, which is built
//! without frame pointers; its stacks are whole all the same and must not be
//! counted as truncated. A test without the harness, so it runs on the process's
//! real main thread (libtest runs tests on threads of its own).

#[cfg(target_os = "linux")]
#[path = "support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Duration;
    use tracewire::profile::{self, Profiler};

    profile::register_current_thread().unwrap();
    let p = Profiler::builder().with_frequency(250).start().unwrap();
    support::burn_cpu(Duration::from_millis(400));
    let stats = p.stop().unwrap().stats();
    let mut ok = stats.walked_samples >= 50 && stats.truncated_samples * 20 <= stats.walked_samples;
    println!(
        "main thread: {} of {} samples counted as truncated",
        stats.truncated_samples, stats.walked_samples
    );
    // Unregistered, the main thread's stacks are whole too (its bounds are its
    // [stack] mapping): they reach `main` from the burning loop.
    profile::unregister_current_thread();
    let p = Profiler::builder().with_frequency(250).start().unwrap();
    support::burn_cpu(Duration::from_millis(400));
    let p = p.stop().unwrap();
    let all: u64 = p.samples().iter().map(|s| s.count).sum();
    let whole: u64 = p
        .samples()
        .iter()
        .filter(|s| {
            s.functions()
                .iter()
                .any(|f| f.ends_with("profiler_main_thread::main"))
        })
        .map(|s| s.count)
        .sum();
    println!("main thread, unregistered: {whole} of {all} samples reach main");
    ok &= all >= 50 && whole * 100 >= all * 95;
    if ok {
        println!("test main_thread_stacks_are_whole ... ok\n1 passed; 0 failed");
    } else {
        println!("test main_thread_stacks_are_whole ... FAILED\n0 passed; 1 failed");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {}
