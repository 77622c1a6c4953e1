//! Custom profiles, as Go's `pprof.NewProfile`: a named set of live entries, each
//! with the stack that added it (e.g. open blobs, held connections).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::pprof;
use super::ProfileError;

struct Inner {
    name: String,
    entries: Mutex<HashMap<u64, Vec<usize>>>,
}

/// A named profile of live entries and the stacks that added them.
///
/// ```
/// use tracewire::profile::CustomProfile;
///
/// let open = CustomProfile::new("example.Open").unwrap();
/// open.add(&1u32, 0);
/// open.add(&2u32, 0);
/// open.remove(&1u32);
/// assert_eq!(open.count(), 1);
/// ```
#[derive(Clone)]
pub struct CustomProfile {
    inner: Arc<Inner>,
}

fn registry() -> MutexGuard<'static, Vec<CustomProfile>> {
    static REGISTRY: OnceLock<Mutex<Vec<CustomProfile>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Every custom profile created in this process, by name.
pub fn custom_profiles() -> Vec<CustomProfile> {
    let mut all = registry().clone();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

fn key_of(key: &(impl Hash + ?Sized)) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl CustomProfile {
    /// Creates and registers the profile `name`. Names are unique per process:
    /// creating one twice is an error (use [`lookup`](Self::lookup)).
    pub fn new(name: impl Into<String>) -> Result<CustomProfile, ProfileError> {
        let name = name.into();
        if name.is_empty() || name.contains('/') {
            return Err(ProfileError::new(
                format!("invalid custom profile name {name:?}"),
                None,
            ));
        }
        let mut reg = registry();
        if reg.iter().any(|p| p.name() == name) {
            return Err(ProfileError::new(
                format!("custom profile {name:?} already exists"),
                None,
            ));
        }
        let p = CustomProfile {
            inner: Arc::new(Inner {
                name,
                entries: Mutex::new(HashMap::new()),
            }),
        };
        reg.push(p.clone());
        Ok(p)
    }

    /// The profile called `name`, if one was created.
    pub fn lookup(name: &str) -> Option<CustomProfile> {
        registry().iter().find(|p| p.name() == name).cloned()
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Vec<usize>>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `key` with the caller's stack, leaving out `skip` more frames above the
    /// caller. Keys are told apart by their hash; adding a key twice keeps the
    /// first stack (Go panics instead).
    #[inline(never)]
    pub fn add(&self, key: &(impl Hash + ?Sized), skip: usize) {
        // `capture` is called by this function: its frame, this one's and `skip`
        // more are left out.
        let stack = capture(skip + 1);
        self.entries().entry(key_of(key)).or_insert(stack);
    }

    /// Removes `key`, if present.
    pub fn remove(&self, key: &(impl Hash + ?Sized)) {
        self.entries().remove(&key_of(key));
    }

    /// How many entries are live.
    pub fn count(&self) -> usize {
        self.entries().len()
    }

    /// The profile in pprof form: one sample per distinct stack, valued by its
    /// number of live entries.
    pub fn to_pprof(&self) -> pprof::Profile {
        let mut by_stack: HashMap<Vec<usize>, i64> = HashMap::new();
        for stack in self.entries().values() {
            *by_stack.entry(stack.clone()).or_default() += 1;
        }
        let mut b = pprof::Builder::new(&[(self.name(), "count")], (self.name(), "count"), 1);
        for (stack, n) in by_stack {
            // Captured frames are return addresses except the innermost, which is
            // the return into our caller too: symbolize all at addr - 1.
            let locs = stack.iter().map(|&a| b.location(a, true)).collect();
            b.profile.sample.push(pprof::Sample {
                location_id: locs,
                value: vec![n],
                label: Vec::new(),
            });
        }
        b.profile
    }

    /// Writes the profile as gzip'd pprof.
    pub fn write_pprof(&self, w: impl Write) -> io::Result<()> {
        self.to_pprof().write_gzip(w)
    }
}

/// The calling stack, from the caller of `capture` outwards, without `skip` more
/// frames. Frames of the unwinder itself (which `backtrace::trace` reports above
/// ours) are found by locating this function's own frame.
#[inline(never)]
fn capture(skip: usize) -> Vec<usize> {
    let me = capture as *const () as usize;
    let mut frames: Vec<(usize, usize)> = Vec::new();
    backtrace::trace(|frame| {
        frames.push((frame.symbol_address() as usize, frame.ip() as usize));
        frames.len() < 64 + 16 + skip
    });
    // Start after our own frame; if the unwinder cannot name it, after as many
    // frames as it usually reports above ours.
    let start = frames
        .iter()
        .position(|(sym, _)| *sym == me)
        .map_or(skip.min(frames.len()), |i| i + 1 + skip);
    frames
        .iter()
        .skip(start)
        .take(64)
        .map(|(_, ip)| *ip)
        .collect()
}

impl fmt::Debug for CustomProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomProfile")
            .field("name", &self.name())
            .field("count", &self.count())
            .finish()
    }
}
