//! The pprof wire format (`profile.proto` from github.com/google/pprof), gzip'd, as
//! read by `go tool pprof`, Pyroscope and Grafana: message types to encode and
//! decode it, and a builder that interns strings, functions and locations.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;

use super::symbol::{self, Frame};

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    /// Sample value types, one per `Sample.value` entry.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Memory mappings of the binaries.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Locations (addresses) referenced by samples.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by locations.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Strings; index 0 is the empty string.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regex of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regex of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Collection start, Unix nanoseconds.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Collection duration in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What `period` measures.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The sampling period.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index of the default sample type (string index).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// `ValueType`: a type and a unit, as string indices.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    /// Type name (string index).
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// Unit (string index).
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`: a stack, its values and labels.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `Label`: a string or numeric label of a sample.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String value (string index), or 0.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// Unit of `num` (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// `Mapping`: a mapped binary.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    /// Unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Start address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Offset in the file.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// File name (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Build id (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations in it carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// ... file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// ... line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// ... inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`: an address and the (possibly inlined) functions at it.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// Unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Mapping id, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost inlined function first; the last is the caller.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Folded location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// `Line`: a function and a line number.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// Function id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Line number.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Column.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    /// Unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Demangled name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Mangled name (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

impl Profile {
    /// The string at index `i` (empty if out of range).
    pub fn string(&self, i: i64) -> &str {
        self.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map_or("", String::as_str)
    }

    /// The index in each sample's values of the sample type named `name` (e.g.
    /// `"cpu"`, `"inuse_space"`), if the profile has it.
    pub fn sample_index(&self, name: &str) -> Option<usize> {
        self.sample_type
            .iter()
            .position(|t| self.string(t.r#type) == name)
    }

    /// The string labels of `sample` as `(key, value)` pairs.
    pub fn labels<'a>(&'a self, sample: &'a Sample) -> impl Iterator<Item = (&'a str, &'a str)> {
        sample
            .label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (self.string(l.key), self.string(l.str)))
    }

    /// The function names of `sample`'s stack, leaf first, inlined frames included.
    pub fn stack(&self, sample: &Sample) -> Vec<&str> {
        let locs: HashMap<u64, &Location> = self.location.iter().map(|l| (l.id, l)).collect();
        let funcs: HashMap<u64, &Function> = self.function.iter().map(|f| (f.id, f)).collect();
        sample
            .location_id
            .iter()
            .filter_map(|id| locs.get(id))
            .flat_map(|l| l.line.iter())
            .filter_map(|line| funcs.get(&line.function_id))
            .map(|f| self.string(f.name))
            .collect()
    }

    /// Gzips and writes the profile.
    pub fn write_gzip(&self, w: impl Write) -> io::Result<()> {
        let mut gz = GzEncoder::new(w, flate2::Compression::default());
        gz.write_all(&self.encode_to_vec())?;
        gz.finish()?;
        Ok(())
    }
}

/// Decodes a pprof profile, gzip'd or not.
pub fn decode(bytes: &[u8]) -> io::Result<Profile> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out)?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    Profile::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Interns strings, functions and locations while a profile is assembled.
#[derive(Debug)]
pub(crate) struct Builder {
    pub(crate) profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String, String), u64>,
    locations: HashMap<(usize, bool), u64>,
    mappings: Vec<MapEntry>,
    /// Inlined frames left out at the innermost end of a sample's leaf location
    /// (one that is not a return address), keeping at least one: the heap
    /// profile's allocator frames, inlined into the caller's code.
    hide_in_leaf: Option<fn(&str) -> bool>,
}

/// The address range of a mapping of the profile.
#[derive(Debug)]
struct MapEntry {
    start: u64,
    end: u64,
    /// Index in `profile.mapping`.
    index: usize,
}

impl Builder {
    /// A builder for a profile whose samples have `sample_types` (type, unit).
    pub(crate) fn new(
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
    ) -> Self {
        let mut b = Builder {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            mappings: Vec::new(),
            hide_in_leaf: None,
        };
        b.string("");
        b.profile.sample_type = sample_types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: b.string(t),
                unit: b.string(u),
            })
            .collect();
        b.profile.period_type = Some(ValueType {
            r#type: b.string(period_type.0),
            unit: b.string(period_type.1),
        });
        b.profile.period = period;
        for m in symbol::mappings() {
            let id = b.profile.mapping.len() as u64 + 1;
            let filename = b.string(&m.path);
            let build_id = match symbol::build_id(&m.path) {
                Some(hex) => b.string(&hex),
                None => 0,
            };
            // The has_* fields are set as locations are symbolized, only when true.
            let (start, offset) = symbol::segment_start(&m);
            b.profile.mapping.push(Mapping {
                id,
                memory_start: start as u64,
                memory_limit: m.end as u64,
                file_offset: offset as u64,
                filename,
                build_id,
                ..Mapping::default()
            });
            b.mappings.push(MapEntry {
                start: start as u64,
                end: m.end as u64,
                index: b.profile.mapping.len() - 1,
            });
        }
        b
    }

    pub(crate) fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let file = frame.file.as_deref().unwrap_or("");
        let key = (
            frame.function.clone(),
            frame.system_name.clone(),
            file.to_owned(),
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let (n, sn, f) = (
            self.string(&frame.function),
            self.string(&frame.system_name),
            self.string(file),
        );
        self.profile.function.push(Function {
            id,
            name: n,
            system_name: sn,
            filename: f,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    /// The location id of `addr`; `is_return` addresses (every frame but the leaf)
    /// are symbolized at `addr - 1`, inside the call instruction.
    pub(crate) fn location(&mut self, addr: usize, is_return: bool) -> u64 {
        if let Some(&id) = self.locations.get(&(addr, is_return)) {
            return id;
        }
        let resolved = symbol::resolve_full(if is_return {
            addr.saturating_sub(1)
        } else {
            addr
        });
        let a = addr as u64;
        if let Some(m) = self.mappings.iter().find(|m| a >= m.start && a < m.end) {
            let mapping = &mut self.profile.mapping[m.index];
            // Set when tracewire symbolized this mapping (its symbol table or
            // DWARF named something), so `go tool pprof` does not redo it. An
            // object with no symbols at all (stripped) leaves them false, and
            // go tool pprof symbolizes it from a binary it is given. The few
            // addresses no symbol covers (PLT stubs) do not clear them: that
            // would make go tool pprof re-read a whole debug binary in vain.
            mapping.has_functions |= resolved.named;
            mapping.has_filenames |= resolved.lines;
            mapping.has_line_numbers |= resolved.lines;
            mapping.has_inline_frames |= resolved.lines && resolved.frames.len() > 1;
        }
        let mut frames = &resolved.frames[..];
        if let (false, Some(hide)) = (is_return, self.hide_in_leaf) {
            let hidden = frames.iter().take_while(|f| hide(&f.function)).count();
            frames = &frames[hidden.min(frames.len().saturating_sub(1))..];
        }
        self.location_with(addr, is_return, frames)
    }

    /// Leaves out the innermost inlined frames `hide` names in each sample's
    /// leaf location (not in return addresses), keeping at least one frame.
    pub(crate) fn hide_in_leaf(&mut self, hide: fn(&str) -> bool) {
        self.hide_in_leaf = Some(hide);
    }

    /// A location for `addr` with the given frames (innermost first).
    pub(crate) fn location_with(&mut self, addr: usize, is_return: bool, frames: &[Frame]) -> u64 {
        let id = self.profile.location.len() as u64 + 1;
        let line = frames
            .iter()
            .map(|f| Line {
                function_id: self.function(f),
                line: i64::from(f.line.unwrap_or(0)),
                column: 0,
            })
            .collect();
        let a = addr as u64;
        let mapping_id = self
            .mappings
            .iter()
            .find(|m| a >= m.start && a < m.end)
            .map_or(0, |m| self.profile.mapping[m.index].id);
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: a,
            line,
            is_folded: false,
        });
        self.locations.insert((addr, is_return), id);
        id
    }

    /// Adds a sample with string labels.
    pub(crate) fn sample(&mut self, stack: &[usize], values: Vec<i64>, labels: &[(&str, &str)]) {
        let location_id = stack
            .iter()
            .enumerate()
            .map(|(i, &a)| self.location(a, i > 0))
            .collect();
        let label = labels
            .iter()
            .map(|(k, v)| Label {
                key: self.string(k),
                str: self.string(v),
                ..Label::default()
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id,
            value: values,
            label,
        });
    }

    /// Adds a sample with the labels of `labels` and, when known, the span's
    /// (`trace_id`, `span_id`, `span_name`), as every tracewire profile writes them.
    pub(crate) fn labelled_sample(
        &mut self,
        stack: &[usize],
        values: Vec<i64>,
        labels: &crate::labels::LabelSet,
        span: (
            Option<crate::trace::TraceId>,
            Option<crate::trace::SpanId>,
            Option<&str>,
        ),
    ) {
        let trace = span.0.map(|t| t.to_string());
        let span_id = span.1.map(|t| t.to_string());
        let mut all: Vec<(&str, &str)> = labels.iter().collect();
        if let Some(t) = &trace {
            all.push(("trace_id", t));
        }
        if let Some(t) = &span_id {
            all.push(("span_id", t));
        }
        if let Some(n) = span.2 {
            all.push(("span_name", n));
        }
        self.sample(stack, values, &all);
    }

    pub(crate) fn comment(&mut self, text: &str) {
        let i = self.string(text);
        self.profile.comment.push(i);
    }

    /// A sample standing for what the profile could not record (`what` is its one
    /// frame), so `go tool pprof -top` shows the gap beside the real samples.
    pub(crate) fn gap_sample(&mut self, what: &str, count: i64, nanos: i64) {
        let frame = super::Frame::named(what);
        let loc = self.location_with(0, false, &[frame]);
        self.profile.sample.push(Sample {
            location_id: vec![loc],
            value: vec![count, nanos],
            label: Vec::new(),
        });
    }
}
