//! Profiles people can read: frames named by their demangled path (no hash),
//! mappings with the binary's GNU build id and `has_*` flags that are true only
//! when they are. A binary without debug info is named from its symbol table; a
//! fully stripped one yields addresses and its build id, which `go tool pprof
//! BINARY profile` symbolizes.
//!
//! The stripped cases run a stripped copy of this test binary as a child process
//! that writes its profile to a file.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{burn_cpu, serial};
use tracewire::profile::{self, pprof, Profiler};

const CHILD_ENV: &str = "TRACEWIRE_SYMBOLS_CHILD_OUT";

/// Burns CPU in a function of this crate, so samples have a known frame.
#[inline(never)]
fn burn_in_a_named_function() {
    burn_cpu(Duration::from_millis(300));
}

/// A profile of `burn_in_a_named_function`, decoded.
fn profile_this_process() -> pprof::Profile {
    profile::register_current_thread().unwrap();
    let p = Profiler::builder().with_frequency(250).start().unwrap();
    burn_in_a_named_function();
    let mut bytes = Vec::new();
    p.stop().unwrap().write_pprof(&mut bytes).unwrap();
    pprof::decode(&bytes).unwrap()
}

/// The mapping of the main executable (whose file is `exe`) and the function
/// names of the locations in it.
fn exe_mapping_and_names(d: &pprof::Profile, exe: &Path) -> (pprof::Mapping, Vec<String>) {
    let exe = exe.to_str().unwrap();
    let m = d
        .mapping
        .iter()
        .find(|m| d.string(m.filename) == exe)
        .unwrap_or_else(|| panic!("no mapping for {exe}"))
        .clone();
    let names = d
        .location
        .iter()
        .filter(|l| l.mapping_id == m.id)
        .flat_map(|l| &l.line)
        .map(|line| {
            let f = &d.function[line.function_id as usize - 1];
            d.string(f.name).to_owned()
        })
        .collect();
    (m, names)
}

fn path_qualified(name: &str) -> bool {
    name.contains("::")
}

/// When this process is the child of a stripped-binary test: profile, write, exit.
fn run_as_child_if_asked() -> bool {
    let Ok(out) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let d = profile_this_process();
    let mut bytes = Vec::new();
    d.write_gzip(&mut bytes).unwrap();
    std::fs::write(out, bytes).unwrap();
    true
}

/// Runs `test` in a copy of this binary processed by `strip strip_args`; returns
/// the copy's path and the profile it wrote.
fn profile_of_stripped_copy(test: &str, strip_args: &[&str]) -> Option<(PathBuf, pprof::Profile)> {
    let exe = std::env::current_exe().unwrap();
    let dir = std::env::temp_dir().join(format!("tracewire-symbols-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("stripped-test-binary");
    std::fs::copy(&exe, &copy).unwrap();
    match Command::new("strip").args(strip_args).arg(&copy).status() {
        Ok(s) if s.success() => {}
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but `strip` (binutils) is missing"
            );
            eprintln!("strip not available: skipping");
            return None;
        }
    }
    let out = dir.join("profile.pb.gz");
    let status = Command::new(&copy)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &out)
        .status()
        .unwrap();
    assert!(status.success(), "child {test}: {status}");
    let d = pprof::decode(&std::fs::read(&out).unwrap()).unwrap();
    Some((copy, d))
}

fn build_id(d: &pprof::Profile, m: &pprof::Mapping) -> String {
    d.string(m.build_id).to_owned()
}

#[test]
fn frames_are_named_by_their_demangled_path_with_build_id_and_true_flags() {
    let _serial = serial();
    let d = profile_this_process();
    let exe = std::env::current_exe().unwrap();
    let (m, names) = exe_mapping_and_names(&d, &exe);
    let qualified = names.iter().filter(|n| path_qualified(n)).count();
    let share = qualified as f64 / names.len().max(1) as f64;
    let unqualified: Vec<&String> = names.iter().filter(|n| !path_qualified(n)).collect();
    eprintln!(
        "{qualified} of {} frames path-qualified; the others: {unqualified:?}",
        names.len()
    );
    assert!(share >= 0.95, "{:.1}% path-qualified", share * 100.0);
    assert!(
        names
            .iter()
            .any(|n| n == "profiler_symbols::burn_in_a_named_function"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !n.contains("::h") || !n.ends_with('E')),
        "hashes left"
    );
    assert!(
        build_id(&d, &m).len() >= 16,
        "build id {:?}",
        build_id(&d, &m)
    );
    assert!(m.has_functions, "its addresses are named");
    // The line flags say whether symbolization found lines in this mapping.
    let any_lines = d
        .location
        .iter()
        .filter(|l| l.mapping_id == m.id)
        .any(|l| l.line.iter().any(|line| line.line > 0));
    assert!(any_lines);
    assert!(m.has_line_numbers && m.has_filenames);
    // Function.system_name keeps the mangled symbol where there is one.
    assert!(d
        .function
        .iter()
        .any(|f| d.string(f.system_name).starts_with("_ZN")));
}

#[test]
fn a_binary_without_debug_info_is_named_from_its_symbol_table() {
    if run_as_child_if_asked() {
        return;
    }
    let _serial = serial();
    let Some((copy, d)) = profile_of_stripped_copy(
        "a_binary_without_debug_info_is_named_from_its_symbol_table",
        &["--strip-debug"],
    ) else {
        return;
    };
    let (m, names) = exe_mapping_and_names(&d, &copy);
    assert!(
        names
            .iter()
            .any(|n| n == "profiler_symbols::burn_in_a_named_function"),
        "{names:?}"
    );
    assert!(m.has_functions, "every address is named");
    assert!(
        !m.has_line_numbers && !m.has_filenames,
        "no DWARF, no lines"
    );
    assert!(build_id(&d, &m).len() >= 16);
}

#[test]
fn a_stripped_binary_gives_addresses_and_its_build_id_for_go_tool_pprof() {
    if run_as_child_if_asked() {
        return;
    }
    let _serial = serial();
    let Some((copy, d)) = profile_of_stripped_copy(
        "a_stripped_binary_gives_addresses_and_its_build_id_for_go_tool_pprof",
        &["--strip-all"],
    ) else {
        return;
    };
    let (m, names) = exe_mapping_and_names(&d, &copy);
    assert!(
        names.iter().all(|n| n.starts_with("0x")),
        "a stripped binary has no names: {names:?}"
    );
    assert!(!m.has_functions, "go tool pprof must symbolize it");
    let exe = std::env::current_exe().unwrap();
    let original = tracewire_build_id(&exe);
    assert_eq!(build_id(&d, &m), original, "the build id survives strip");

    // The unstripped binary names the addresses.
    if !go_installed() {
        return;
    }
    let profile = copy.with_file_name("profile.pb.gz");
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw", "-symbolize=local"])
        .arg(&exe)
        .arg(&profile)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("burn_in_a_named_function"),
        "go tool pprof BINARY profile: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The build id as the profile of an unstripped run writes it.
fn tracewire_build_id(exe: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(exe).output();
    if let Ok(o) = out {
        let text = String::from_utf8_lossy(&o.stdout);
        if let Some(line) = text.lines().find(|l| l.contains("Build ID:")) {
            return line.split("Build ID:").nth(1).unwrap().trim().to_owned();
        }
    }
    // Without readelf, our own profile of this process says it.
    let d = profile_this_process();
    let (m, _) = exe_mapping_and_names(&d, exe);
    build_id(&d, &m)
}

fn go_installed() -> bool {
    let found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but `go` is not installed"
    );
    found
}

/// A comparator that burns CPU, called by libc's `qsort` (glibc is built without
/// frame pointers, so the frames between it and the test are not chained).
extern "C" fn slow_compare(a: *const libc::c_void, b: *const libc::c_void) -> libc::c_int {
    let mut x = 0u64;
    for i in 0..20_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31) ^ i);
    }
    std::hint::black_box(x);
    // SAFETY: qsort passes pointers to two elements of the u32 array below.
    let (a, b) = unsafe { (*(a as *const u32), *(b as *const u32)) };
    a.cmp(&b) as libc::c_int
}

#[test]
fn stacks_cut_short_by_code_without_frame_pointers_are_counted_and_said() {
    let _serial = serial();
    profile::register_current_thread().unwrap();
    let p = Profiler::builder().with_frequency(250).start().unwrap();
    let start = profile::thread_cpu_time().unwrap();
    while profile::thread_cpu_time().unwrap() - start < Duration::from_millis(400) {
        let mut v: Vec<u32> = (0..64u32).rev().collect();
        // SAFETY: a valid array of 64 u32s and a comparator for u32s.
        unsafe {
            libc::qsort(
                v.as_mut_ptr().cast(),
                v.len(),
                std::mem::size_of::<u32>(),
                Some(slow_compare),
            )
        };
    }
    let p = p.stop().unwrap();
    let stats = p.stats();
    eprintln!("{stats:?}");
    assert!(stats.walked_samples > 50, "{stats:?}");
    assert!(
        stats.truncated_samples * 2 > stats.walked_samples,
        "most stacks pass through qsort: {stats:?}"
    );
    let mut bytes = Vec::new();
    p.write_pprof(&mut bytes).unwrap();
    let d = pprof::decode(&bytes).unwrap();
    let said = d
        .comment
        .iter()
        .any(|&i| d.string(i).contains("force-frame-pointers"));
    assert!(said, "the profile says so");
}
