//! Symbolization, off the signal path: addresses to function names, files and
//! lines (inlined frames included), cached per address; and the process's
//! executable mappings with their GNU build ids.
//!
//! Names come from two places, because neither is complete alone:
//! - the ELF symbol table names the outermost (non-inlined) function of every
//!   address with its full mangled path, even in a binary without debug info;
//! - DWARF gives files, lines and the inlined frames. With `debug =
//!   "line-tables-only"`, DWARF keeps only the short name of each function
//!   (`poll`, `{closure#0}`), so inlined frames are path-qualified only when the
//!   binary has DWARF linkage names (`debug = "limited"` or more).
//!
//! Every name is demangled without the hash suffix
//! (`tokio::runtime::task::raw::poll`); [`Frame::system_name`] keeps the name as
//! found (the mangled symbol where there is one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One function at an address. Inlined frames come innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name, path-qualified where the binary allows, without
    /// the hash suffix.
    pub function: String,
    /// The name as the binary spells it (mangled, with its hash, for a symbol
    /// table name; the DWARF name otherwise).
    pub system_name: String,
    /// Source file, if known.
    pub file: Option<String>,
    /// Line, if known.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame named `function` and nothing else (no file, no line).
    pub(crate) fn named(function: impl Into<String>) -> Frame {
        let function = function.into();
        Frame {
            system_name: function.clone(),
            function,
            file: None,
            line: None,
        }
    }
}

/// The frames of one address and what they are made of.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) frames: Arc<[Frame]>,
    /// Every frame is named from a symbol table or DWARF (not by its address).
    pub(crate) named: bool,
    /// Files and lines come from DWARF.
    pub(crate) lines: bool,
}

/// An object file the process has mapped, opened for symbolization.
struct Object {
    loader: Option<addr2line::Loader>,
    /// `(p_offset, p_vaddr, p_filesz)` of its loadable segments.
    segments: Vec<(u64, u64, u64)>,
}

/// Opened objects and resolved addresses, behind one lock (addr2line's `Loader`
/// is not `Sync`).
struct Symbolizer {
    objects: HashMap<String, Option<Object>>,
    cache: HashMap<usize, Resolved>,
    maps: Vec<MappingInfo>,
}

fn symbolizer() -> &'static Mutex<Symbolizer> {
    static S: OnceLock<Mutex<Symbolizer>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(Symbolizer {
            objects: HashMap::new(),
            cache: HashMap::new(),
            maps: Vec::new(),
        })
    })
}

/// The frames at `addr` (an instruction address), innermost inlined frame first.
/// Unknown addresses give one frame named by the address.
pub fn resolve(addr: usize) -> Arc<[Frame]> {
    resolve_full(addr).frames
}

pub(crate) fn resolve_full(addr: usize) -> Resolved {
    let mut s = symbolizer().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.cache.get(&addr) {
        return r.clone();
    }
    let r = s.lookup(addr);
    s.cache.insert(addr, r.clone());
    r
}

impl Symbolizer {
    fn mapping_of(&mut self, addr: usize) -> Option<MappingInfo> {
        let find = |maps: &[MappingInfo]| {
            maps.iter()
                .find(|m| m.start <= addr && addr < m.end)
                .cloned()
        };
        if let Some(m) = find(&self.maps) {
            return Some(m);
        }
        // A library loaded since the last read.
        self.maps = mappings();
        find(&self.maps)
    }

    fn lookup(&mut self, addr: usize) -> Resolved {
        let by_address = || Resolved {
            frames: vec![Frame::named(format!("{addr:#x}"))].into(),
            named: false,
            lines: false,
        };
        let Some(map) = self.mapping_of(addr) else {
            return by_address();
        };
        let object = self
            .objects
            .entry(map.path.clone())
            .or_insert_with(|| Object::open(&map.path));
        let Some(object) = object.as_ref() else {
            return by_address();
        };
        let file_offset = (addr - map.start + map.offset) as u64;
        let Some(probe) = object.vaddr(file_offset) else {
            return by_address();
        };
        let Some(loader) = &object.loader else {
            return by_address();
        };
        let symbol = loader.find_symbol(probe).map(|s| s.to_owned());
        let mut frames = Vec::new();
        // Whether every frame has a line (a line 0 is no line).
        let mut lines = true;
        if let Ok(mut iter) = loader.find_frames(probe) {
            while let Ok(Some(f)) = iter.next() {
                let raw = f
                    .function
                    .as_ref()
                    .and_then(|n| n.raw_name().ok().map(|r| r.into_owned()));
                let (file, line) = match &f.location {
                    Some(l) => (l.file.map(str::to_owned), l.line.filter(|&n| n > 0)),
                    None => (None, None),
                };
                lines &= line.is_some();
                frames.push((raw, file, line));
            }
        }
        let outermost = frames.len().saturating_sub(1);
        let mut out: Vec<Frame> = frames
            .into_iter()
            .enumerate()
            .map(|(i, (raw, file, line))| {
                // The outermost frame is the symbol's own function: its symbol
                // table name is path-qualified even when DWARF's is short.
                let raw = match (&raw, &symbol) {
                    (Some(r), Some(s)) if i == outermost && !is_mangled(r) => s.clone(),
                    (Some(r), _) => r.clone(),
                    (None, Some(s)) if i == outermost => s.clone(),
                    (None, _) => format!("{addr:#x}"),
                };
                Frame {
                    function: demangle(&raw),
                    system_name: raw,
                    file,
                    line,
                }
            })
            .collect();
        if out.is_empty() {
            lines = false;
            match symbol {
                Some(s) => out.push(Frame {
                    function: demangle(&s),
                    system_name: s,
                    file: None,
                    line: None,
                }),
                None => return by_address(),
            }
        }
        let named = out.iter().all(|f| !f.function.starts_with("0x"));
        Resolved {
            frames: out.into(),
            named,
            lines,
        }
    }
}

impl Object {
    fn open(path: &str) -> Option<Object> {
        let file = std::fs::File::open(path).ok()?;
        let cache = object::read::ReadCache::new(file);
        let parsed = object::File::parse(&cache).ok()?;
        use object::{Object as _, ObjectSegment as _};
        let segments = parsed
            .segments()
            .filter_map(|s| {
                let (offset, size) = s.file_range();
                (size > 0).then_some((offset, s.address(), size))
            })
            .collect();
        Some(Object {
            loader: addr2line::Loader::new(path).ok(),
            segments,
        })
    }

    /// The object's virtual address for a file offset (what its symbols and DWARF
    /// are keyed by).
    fn vaddr(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, _, size)| *off <= file_offset && file_offset < off + size)
            .map(|(off, vaddr, _)| file_offset - off + vaddr)
    }
}

fn is_mangled(name: &str) -> bool {
    name.starts_with("_ZN") || name.starts_with("_R") || name.starts_with("__ZN")
}

/// The demangled form of a Rust symbol without its hash suffix; other names as
/// they are.
fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_owned(),
    }
}

/// `name` without generic arguments, for places that show a name in little room
/// (flame graph frames): `Harness<T,S>::poll` becomes `Harness::poll`, while a
/// qualified self (`<F as Future>::poll`) keeps its brackets, its own generic
/// arguments dropped.
pub fn short_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Depth of the generic-argument brackets being dropped.
    let mut dropping = 0usize;
    for c in name.chars() {
        match c {
            '<' if dropping > 0 => dropping += 1,
            // `<` at the start of a path segment opens a qualified self (kept);
            // after an identifier it opens generic arguments (dropped).
            '<' if matches!(out.chars().last(), None | Some(':' | '<' | ' ' | '&')) => {
                out.push('<');
            }
            '<' => dropping = 1,
            '>' if dropping > 0 => dropping -= 1,
            _ if dropping > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

/// An executable mapping of the process.
#[derive(Clone, Debug)]
pub(crate) struct MappingInfo {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) offset: usize,
    pub(crate) path: String,
}

/// The executable mappings from `/proc/self/maps` (empty elsewhere): file-backed
/// ones, and `[vdso]`.
pub(crate) fn mappings() -> Vec<MappingInfo> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines().filter_map(parse_maps_line).collect()
}

/// One line of `/proc/self/maps`, if it is an executable mapping we describe. The
/// path is everything after the fifth field (it may hold spaces).
fn parse_maps_line(line: &str) -> Option<MappingInfo> {
    let mut rest = line;
    let mut fields = [""; 5];
    for f in fields.iter_mut() {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, offset, _dev, _inode] = fields;
    let path = rest.trim_start();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    Some(MappingInfo {
        start: usize::from_str_radix(s, 16).ok()?,
        end: usize::from_str_radix(e, 16).ok()?,
        offset: usize::from_str_radix(offset, 16).ok()?,
        path: path.to_owned(),
    })
}

/// Where `map` really begins: the start address and file offset of the first
/// loadable segment inside it. The kernel maps whole pages, so a segment whose
/// file offset is not page-aligned (e.g. `0x144b00`) shows up in
/// `/proc/self/maps` with the page's offset (`0x144000`); tools that compute the
/// load base from the mapping (`go tool pprof`) need the segment's own offset.
pub(crate) fn segment_start(map: &MappingInfo) -> (usize, usize) {
    let mut s = symbolizer().lock().unwrap_or_else(|e| e.into_inner());
    let object = s
        .objects
        .entry(map.path.clone())
        .or_insert_with(|| Object::open(&map.path));
    let len = (map.end - map.start) as u64;
    let first = object.as_ref().and_then(|o| {
        o.segments
            .iter()
            .map(|(off, _, _)| *off)
            .filter(|off| *off >= map.offset as u64 && *off < map.offset as u64 + len)
            .min()
    });
    match first {
        Some(off) => {
            let delta = off as usize - map.offset;
            (map.start + delta, off as usize)
        }
        None => (map.start, map.offset),
    }
}

/// The GNU build id of the object at `path`, as lowercase hex.
pub(crate) fn build_id(path: &str) -> Option<String> {
    static IDS: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let ids = IDS.get_or_init(Default::default);
    let mut ids = ids.lock().unwrap_or_else(|e| e.into_inner());
    ids.entry(path.to_owned())
        .or_insert_with(|| {
            use object::Object as _;
            let file = std::fs::File::open(path).ok()?;
            let cache = object::read::ReadCache::new(file);
            let parsed = object::File::parse(&cache).ok()?;
            let id = parsed.build_id().ok()??;
            Some(id.iter().map(|b| format!("{b:02x}")).collect())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_keep_paths_with_spaces_and_the_vdso() {
        let m = parse_maps_line(
            "7f1c2a000000-7f1c2a100000 r-xp 00002000 08:01 1234      /opt/my app/lib x.so",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f1c2a000000, 0x7f1c2a100000, 0x2000)
        );
        assert_eq!(m.path, "/opt/my app/lib x.so");
        let v = parse_maps_line(
            "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(v.path, "[vdso]");
        assert!(parse_maps_line("7ffd1000-7ffd3000 rw-p 00000000 00:00 0 [stack]").is_none());
        assert!(parse_maps_line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0").is_none());
        let d = parse_maps_line("1000-2000 r-xp 00000000 08:01 7 /usr/bin/app (deleted)").unwrap();
        assert_eq!(d.path, "/usr/bin/app");
    }

    #[test]
    fn short_names_drop_generic_arguments_but_keep_qualified_selves() {
        for (full, short) in [
            (
                "tokio::runtime::task::harness::Harness<T,S>::poll",
                "tokio::runtime::task::harness::Harness::poll",
            ),
            (
                "<core::pin::Pin<P> as core::future::future::Future>::poll",
                "<core::pin::Pin as core::future::future::Future>::poll",
            ),
            (
                "poll<demo::render::{async_fn#0}::{async_block_env#0}>",
                "poll",
            ),
            ("demo::hash_rounds", "demo::hash_rounds"),
            (
                "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop",
                "<alloc::vec::Vec as core::ops::drop::Drop>::drop",
            ),
        ] {
            assert_eq!(short_name(full), short, "{full}");
        }
    }

    #[test]
    fn a_function_of_this_binary_is_named_by_its_path() {
        #[inline(never)]
        fn marker_function_for_symbolization() -> usize {
            marker_function_for_symbolization as fn() -> usize as usize
        }
        let addr = std::hint::black_box(marker_function_for_symbolization());
        let r = resolve_full(addr);
        let outer = r.frames.last().unwrap();
        assert!(
            outer
                .function
                .ends_with("marker_function_for_symbolization"),
            "{:?}",
            r.frames
        );
        assert!(
            outer.function.contains("::"),
            "path-qualified: {:?}",
            r.frames
        );
        assert!(
            !outer.function.contains("::h"),
            "no hash: {}",
            outer.function
        );
        assert!(r.named);
    }

    #[test]
    fn the_running_binary_has_a_build_id() {
        let exe = std::env::current_exe().unwrap();
        let id = build_id(exe.to_str().unwrap());
        assert!(id.as_ref().is_some_and(|i| i.len() >= 16), "{id:?}");
    }
}
