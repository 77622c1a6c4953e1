//! Profiler labels: Go's `pprof.Labels` / `pprof.Do` for Rust.
//!
//! A [`LabelSet`] is an immutable, shared set of `key=value` strings. It lives in the
//! [`Context`]; whatever makes a context current makes its labels current, and the
//! CPU profiler copies the current labels into every sample it takes.
//!
//! ```
//! use tracewire::labels::{self, LabelSet};
//!
//! let set = LabelSet::new([("worker", "purge")]);
//! labels::with_labels(&set, || {
//!     // CPU samples taken here carry worker=purge.
//!     assert_eq!(labels::current().get("worker"), Some("purge"));
//! });
//! assert!(labels::current().is_empty());
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::trace::Str;

/// An immutable set of profiler labels with unique keys, sorted by key.
///
/// Cloning is one reference-count increment; the empty set allocates nothing.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    inner: Option<Arc<LabelSetInner>>,
}

/// The shared body of a non-empty [`LabelSet`]. Its address is what the profiler's
/// signal handler copies (and reference-counts) into a sample (see `slot`).
#[derive(PartialEq, Eq, Hash, Debug)]
pub(crate) struct LabelSetInner {
    pub(crate) labels: Box<[(Str, Str)]>,
}

static EMPTY: LabelSet = LabelSet { inner: None };

/// Label-set bodies alive now, counted in debug builds only (see [`live_sets`]).
#[cfg(debug_assertions)]
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl LabelSetInner {
    fn new(labels: Box<[(Str, Str)]>) -> Self {
        #[cfg(debug_assertions)]
        LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LabelSetInner { labels }
    }
}

impl Drop for LabelSetInner {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many non-empty label sets are alive in the process (each distinct set
/// once, however many [`LabelSet`] clones and profiler samples refer to it); `None`
/// in release builds, which do not count. A debug counter for tests: after every
/// context and set is dropped and no profile runs, it is back where it was, or a
/// reference was leaked; below, one was released twice.
pub fn live_sets() -> Option<usize> {
    #[cfg(debug_assertions)]
    {
        Some(LIVE.load(std::sync::atomic::Ordering::Relaxed))
    }
    #[cfg(not(debug_assertions))]
    {
        None
    }
}

impl LabelSet {
    /// A label set from `(key, value)` pairs. On a repeated key the last value wins.
    pub fn new<K, V, I>(pairs: I) -> Self
    where
        K: Into<Str>,
        V: Into<Str>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut labels: Vec<(Str, Str)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.into(), v.into());
            match labels.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => labels.push((k, v)),
            }
        }
        Self::from_sorted_unique(labels_sorted(labels))
    }

    fn from_sorted_unique(labels: Vec<(Str, Str)>) -> Self {
        if labels.is_empty() {
            return LabelSet::default();
        }
        LabelSet {
            inner: Some(Arc::new(LabelSetInner::new(labels.into_boxed_slice()))),
        }
    }

    /// The empty label set.
    pub const fn empty() -> Self {
        LabelSet { inner: None }
    }

    pub(crate) fn empty_ref() -> &'static LabelSet {
        &EMPTY
    }

    /// Whether the set has no label.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.labels.len())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        let labels = &self.inner.as_ref()?.labels;
        labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*labels[i].1)
    }

    /// The labels, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .iter()
            .flat_map(|i| i.labels.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// This set merged with `child`: every label of both, `child`'s value winning on
    /// a shared key (Go's `pprof.WithLabels`). Merging with an empty set allocates
    /// nothing.
    pub fn merge(&self, child: &LabelSet) -> LabelSet {
        match (&self.inner, &child.inner) {
            (_, None) => self.clone(),
            (None, _) => child.clone(),
            (Some(a), Some(b)) => {
                let (a, b) = (&a.labels, &b.labels);
                let mut out = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() && j < b.len() {
                    match a[i].0.cmp(&b[j].0) {
                        std::cmp::Ordering::Less => {
                            out.push(a[i].clone());
                            i += 1;
                        }
                        std::cmp::Ordering::Greater => {
                            out.push(b[j].clone());
                            j += 1;
                        }
                        std::cmp::Ordering::Equal => {
                            out.push(b[j].clone());
                            i += 1;
                            j += 1;
                        }
                    }
                }
                out.extend_from_slice(&a[i..]);
                out.extend_from_slice(&b[j..]);
                Self::from_sorted_unique(out)
            }
        }
    }

    /// The address of the shared body (null when empty): what the profiler copies.
    pub(crate) fn as_ptr(&self) -> *const LabelSetInner {
        self.inner.as_ref().map_or(std::ptr::null(), Arc::as_ptr)
    }

    #[cfg(test)]
    pub(crate) fn strong_count(&self) -> usize {
        self.inner.as_ref().map_or(0, Arc::strong_count)
    }

    /// Rebuilds a label set from a pointer taken with `Arc::into_raw`-style counting.
    #[cfg_attr(not(feature = "profile"), allow(dead_code))]
    pub(crate) fn from_arc(inner: Arc<LabelSetInner>) -> LabelSet {
        LabelSet { inner: Some(inner) }
    }
}

fn labels_sorted(mut labels: Vec<(Str, Str)>) -> Vec<(Str, Str)> {
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels
}

impl<K: Into<Str>, V: Into<Str>, const N: usize> From<[(K, V); N]> for LabelSet {
    fn from(pairs: [(K, V); N]) -> Self {
        LabelSet::new(pairs)
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// The labels of the calling thread's current context.
pub fn current() -> LabelSet {
    Context::map_current(|c| c.labels().clone())
}

/// Runs `f` with the current context's labels merged with `labels` (Go's
/// `pprof.Do`); CPU samples taken while `f` runs carry them.
///
/// Entering and leaving is cheap: `labels` is borrowed for the call, and the
/// merged set is built only if something asks for it ([`current`],
/// [`Context::current`], a [`spawn`](crate::spawn)); the profiler merges the
/// labels of its samples later, off the signal path. Past a few nested calls
/// (on the same context), the merged context is built on entry.
///
/// `labels` is a `LabelSet` or a `&LabelSet`. The same merge has two other
/// forms: [`Context::with_labels`] returns a new context (to attach, or to
/// hand to other work), and [`ContextExt::with_labels`](crate::ContextExt::with_labels)
/// wraps a future (this function cannot: the frame ends when `f` returns).
///
/// ```
/// use tracewire::labels::{self, LabelSet};
///
/// let set = LabelSet::new([("worker", "purge")]);
/// let got = labels::with_labels(&set, || labels::current().get("worker").map(str::to_owned));
/// assert_eq!(got.as_deref(), Some("purge"));
/// labels::with_labels(LabelSet::new([("job", "gc")]), || {
///     assert_eq!(labels::current().get("job"), Some("gc"));
/// });
/// assert!(labels::current().is_empty());
/// ```
pub fn with_labels<R>(labels: impl Borrow<LabelSet>, f: impl FnOnce() -> R) -> R {
    crate::slot::with_frame(labels.borrow(), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_last_value_wins() {
        let s = LabelSet::new([("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![("a", "2"), ("b", "3")]);
    }

    #[test]
    fn merge_keeps_both_and_child_wins() {
        let parent = LabelSet::new([("a", "p"), ("c", "p")]);
        let child = LabelSet::new([("b", "c"), ("c", "c")]);
        let m = parent.merge(&child);
        assert_eq!(m.to_string(), "a=p,b=c,c=c");
        assert_eq!(parent.merge(&LabelSet::empty()).as_ptr(), parent.as_ptr());
        assert_eq!(LabelSet::empty().merge(&child).as_ptr(), child.as_ptr());
    }

    #[test]
    fn with_labels_nests_and_restores() {
        let outer = LabelSet::new([("worker", "purge"), ("k", "1")]);
        with_labels(&outer, || {
            with_labels(LabelSet::new([("k", "2")]), || {
                assert_eq!(current().to_string(), "k=2,worker=purge");
            });
            assert_eq!(current().to_string(), "k=1,worker=purge");
        });
        assert!(current().is_empty());
    }
}
