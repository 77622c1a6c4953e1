//! Symbolization, off the signal path: addresses to function names, files and
//! lines (inlined frames included), cached per address; and the process's
//! executable mappings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One function at an address. Inlined frames come innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name, without the hash suffix.
    pub function: String,
    /// Source file, if known.
    pub file: Option<String>,
    /// Line, if known.
    pub line: Option<u32>,
}

type Cache = Mutex<HashMap<usize, Arc<[Frame]>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The frames at `addr` (an instruction address), innermost inlined frame first.
/// Unknown addresses give one frame named by the address.
pub fn resolve(addr: usize) -> Arc<[Frame]> {
    if let Some(f) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&addr) {
        return f.clone();
    }
    let mut frames = Vec::new();
    backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
        let function = sym
            .name()
            .map(|n| format!("{n:#}"))
            .unwrap_or_else(|| format!("{addr:#x}"));
        frames.push(Frame {
            function,
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            function: format!("{addr:#x}"),
            file: None,
            line: None,
        });
    }
    let frames: Arc<[Frame]> = frames.into();
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr, frames.clone());
    frames
}

/// An executable mapping of the process.
#[derive(Clone, Debug)]
pub(crate) struct MappingInfo {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) offset: usize,
    pub(crate) path: String,
}

/// The executable, file-backed mappings from `/proc/self/maps` (empty elsewhere).
pub(crate) fn mappings() -> Vec<MappingInfo> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let range = it.next()?;
            let perms = it.next()?;
            let offset = it.next()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.next()?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(MappingInfo {
                start: usize::from_str_radix(s, 16).ok()?,
                end: usize::from_str_radix(e, 16).ok()?,
                offset: usize::from_str_radix(offset, 16).ok()?,
                path: path.to_owned(),
            })
        })
        .collect()
}
