//! The profiler cannot crash, hang or mislead the process it samples: refused
//! starts touch nothing, late signals are harmless, timer failures are counted and
//! shown, forked children neither deadlock nor believe a profile runs, and CPU is
//! never credited twice. Each test reproduces a defect found in an earlier version.
//!
//! Tests that may kill or hang their process run the risky part in a forked child
//! (one thread, so its signal mask is fully ours) and judge its exit status.
#![cfg(target_os = "linux")]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{burn_cpu, serial};

use tracewire::labels::{self, LabelSet};
use tracewire::profile::{self, pprof, Profiler};

/// Forks; the child runs `child` and exits with the code it returns (it must not
/// return otherwise). The parent waits at most `timeout` and returns the child's
/// exit code, or `None` if it hung (it is then killed) or died by a signal (whose
/// number is printed).
fn in_forked_child(timeout: Duration, child: impl FnOnce() -> i32) -> Result<i32, String> {
    // SAFETY: fork in a test process; the child only runs `child` and `_exit`s,
    // never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            return Err(format!("child killed by signal {}", libc::WTERMSIG(status)));
        }
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own hung child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!("child hung for {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn block_sigprof(how: libc::c_int) {
    // SAFETY: a valid, initialised signal set for this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn sigprof_pending() -> bool {
    // SAFETY: valid out-pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGPROF) == 1
    }
}

#[test]
fn a_refused_start_leaves_the_running_profile_its_samples() {
    let _serial = serial();
    let profiler = Profiler::builder().with_frequency(250).start().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // A stream of refused starts, as concurrent /debug/pprof/profile requests make.
    let refuser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match Profiler::builder().with_frequency(250).start() {
                    Err(e) if e.is_busy() => refused += 1,
                    Err(e) => panic!("unexpected error {e}"),
                    Ok(_) => panic!("a second profile started"),
                }
            }
            refused
        })
    };
    let worker = std::thread::spawn(|| {
        profile::register_current_thread().unwrap();
        let before = profile::thread_cpu_time().unwrap();
        labels::with_labels(LabelSet::new([("job", "busy")]), || {
            burn_cpu(Duration::from_millis(800))
        });
        profile::thread_cpu_time().unwrap() - before
    });
    let measured = worker.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let refused = refuser.join().unwrap();
    let p = profiler.stop().unwrap();
    let sampled = p
        .cpu_by_label("job")
        .get("busy")
        .copied()
        .unwrap_or_default();
    let captured = sampled.as_secs_f64() / measured.as_secs_f64();
    eprintln!("refused {refused} starts; sampled {sampled:?} of {measured:?}");
    assert!(refused > 100, "only {refused} refused starts");
    assert!(
        captured >= 0.90,
        "the running profile lost samples to refused starts: captured {:.1}%",
        captured * 100.0
    );
}

#[test]
fn a_sigprof_pending_when_the_profile_stops_does_not_kill_the_process() {
    let _serial = serial();
    let code = in_forked_child(Duration::from_secs(20), || {
        // Every thread of the child (this one and those it starts) blocks SIGPROF,
        // so the signals of the profile's timers stay pending past its end.
        block_sigprof(libc::SIG_BLOCK);
        profile::register_current_thread().unwrap();
        let p = Profiler::builder().with_frequency(1000).start().unwrap();
        burn_cpu(Duration::from_millis(100));
        drop(p);
        if !sigprof_pending() {
            return 2; // the scenario did not happen
        }
        block_sigprof(libc::SIG_UNBLOCK);
        // A signal of the stopped profile has now been delivered.
        burn_cpu(Duration::from_millis(20));
        0
    });
    assert_eq!(code, Ok(0), "the late SIGPROF must be harmless");
}

#[test]
fn a_thread_whose_timer_cannot_be_created_is_counted_and_shown() {
    let _serial = serial();
    let code = in_forked_child(Duration::from_secs(20), || {
        // RLIMIT_SIGPENDING 0: timer_create fails with EAGAIN, as on a host whose
        // user has too many pending signals.
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: lowers this (child) process's own limit; valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &zero) };
        // SAFETY: a throwaway timer to check that the limit bites; deleted if made.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_NONE;
            let mut t: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut t) == 0 {
                libc::timer_delete(t);
                return 2; // the limit does not stop timer_create here
            }
        }
        profile::register_current_thread().unwrap();
        let p = Profiler::builder().with_frequency(100).start().unwrap();
        burn_cpu(Duration::from_millis(300));
        let p = p.stop().unwrap();
        let stats = p.stats();
        eprintln!("child: {stats:?}");
        if stats.unsampled_threads != 1 || stats.unsampled_cpu < Duration::from_millis(250) {
            return 7; // not counted, or its missing CPU not measured
        }
        let mut bytes = Vec::new();
        p.write_pprof(&mut bytes).unwrap();
        let d = pprof::decode(&bytes).unwrap();
        let comments: Vec<&str> = d.comment.iter().map(|&i| d.string(i)).collect();
        let shown = comments.iter().any(|c| c.contains("not sampled"));
        let sample = d
            .sample
            .iter()
            .any(|s| d.stack(s).iter().any(|f| f.contains("not sampled")));
        if shown && sample {
            0
        } else {
            3
        }
    });
    assert_eq!(
        code,
        Ok(0),
        "exit 3: the profile neither says nor shows that a thread was not sampled"
    );
}

#[test]
fn a_child_forked_during_a_profile_can_start_its_own() {
    let _serial = serial();
    profile::register_current_thread().unwrap();
    let profiler = Profiler::builder().with_frequency(100).start().unwrap();
    // The child only does what is safe after fork in a multi-threaded process (no
    // thread creation): it asks whether a profile runs and uses the registry.
    // (On the code before the fix this test started a profile in the child, which
    // was refused as busy: "exit 4".)
    let code = in_forked_child(Duration::from_secs(20), || {
        if profile::is_running() {
            return 4; // the child believes a profile runs
        }
        profile::register_current_thread().unwrap();
        profile::unregister_current_thread();
        0
    });
    assert!(profile::is_running(), "the parent's profile still runs");
    drop(profiler);
    assert_eq!(
        code,
        Ok(0),
        "exit 4: the child believed a profile was running"
    );
}

#[test]
fn a_child_forked_while_threads_register_does_not_deadlock() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    // Threads registering and unregistering take the profiler's registry lock all
    // the time; a fork lands while one of them holds it.
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    profile::register_current_thread().unwrap();
                    profile::unregister_current_thread();
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for _ in 0..100 {
        let r = in_forked_child(Duration::from_secs(3), || {
            profile::register_current_thread().unwrap();
            profile::unregister_current_thread();
            0
        });
        if r != Ok(0) {
            failures.push(r);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 100 children: {:?}",
        failures.len(),
        failures.first()
    );
}

#[test]
fn a_thread_that_registers_and_unregisters_is_not_credited_twice() {
    let _serial = serial();
    let profiler = Profiler::builder().with_frequency(100).start().unwrap();
    let worker = std::thread::spawn(|| {
        let phase = |name: &'static str| {
            let before = profile::thread_cpu_time().unwrap();
            labels::with_labels(LabelSet::new([("phase", name)]), || {
                burn_cpu(Duration::from_millis(300))
            });
            profile::thread_cpu_time().unwrap() - before
        };
        // Unregistered (sampled by the fallback timers), then registered, then
        // unregistered again.
        let a = phase("a-unregistered");
        profile::register_current_thread().unwrap();
        let b = phase("b-registered");
        profile::unregister_current_thread();
        let c = phase("c-unregistered-again");
        [a, b, c]
    });
    let measured = worker.join().unwrap();
    let p = profiler.stop().unwrap();
    let by_phase = p.cpu_by_label("phase");
    eprintln!("sampled {by_phase:?} measured {measured:?}");
    let c = by_phase
        .get("c-unregistered-again")
        .copied()
        .unwrap_or_default();
    let ratio = c.as_secs_f64() / measured[2].as_secs_f64();
    assert!(
        ratio <= 1.15,
        "the last phase was credited {:.0}% of its CPU",
        ratio * 100.0
    );
}

/// Spins `iterations` times with the frame pointer set to `fp` (restored after).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn spin_with_frame_pointer(fp: usize, iterations: u64) {
    // SAFETY: saves rbp, loads `fp` into it, counts down, and restores rbp; it
    // reads no memory through it (only the signal handler may try to).
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov rbp, {fp}",
            "2:",
            "dec {n}",
            "jnz 2b",
            "pop rbp",
            fp = in(reg) fp,
            n = inout(reg) iterations => _,
        );
    }
}

/// A thread nobody registered whose frame pointer points into an unmapped page
/// of its own stack, above its stack pointer (where code built without frame
/// pointers may leave any value): the walk reads that record with
/// process_vm_readv, which fails, instead of faulting. Run in a forked child,
/// whose death by SIGSEGV the parent would report.
#[cfg(target_arch = "x86_64")]
#[test]
fn an_unregistered_threads_frame_pointer_into_an_unmapped_page_does_not_crash() {
    let _serial = serial();
    let result = in_forked_child(Duration::from_secs(30), || {
        let profiler = Profiler::builder().with_frequency(1000).start().unwrap();
        let survived = std::thread::spawn(|| {
            // A page of this frame's own buffer, above the stack pointer of the
            // spin below, made unreadable while it spins.
            let mut buf = [0u8; 3 * 4096];
            std::hint::black_box(&mut buf);
            let page = (buf.as_ptr() as usize + 4095) & !4095;
            // SAFETY: the page lies within `buf`, which nothing touches until
            // it is readable again.
            unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE) };
            let start = profile::thread_cpu_time().unwrap();
            while profile::thread_cpu_time().unwrap() - start < Duration::from_millis(300) {
                spin_with_frame_pointer(page + 64, 20_000_000);
            }
            // SAFETY: as above.
            unsafe {
                libc::mprotect(
                    page as *mut libc::c_void,
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            std::hint::black_box(&buf);
            true
        })
        .join()
        .unwrap();
        let p = profiler.stop().unwrap();
        let samples: u64 = p.samples().iter().map(|s| s.count).sum();
        // Samples were taken in the spin (so its frame pointer was tried).
        i32::from(!(survived && samples >= 100))
    });
    assert_eq!(result, Ok(0), "the child: {result:?}");
}
