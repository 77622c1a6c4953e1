//! Route names for spans and the `http-path` label, guarded against cardinality
//! blow-up.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

/// Keeps at most `max` distinct raw paths; every path after that is `other`, so a
/// client requesting random URLs cannot grow the profiler's label values (or a
/// metrics backend's series) without bound.
pub(crate) struct RouteGuard {
    max: usize,
    seen: RwLock<HashSet<Arc<str>>>,
}

/// The value used once the guard is full.
pub(crate) const OTHER: &str = "other";

impl RouteGuard {
    pub(crate) fn new(max: usize) -> Self {
        RouteGuard {
            max,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// `path` if it is one of the first `max` distinct paths seen, else `other`.
    pub(crate) fn admit(&self, path: &str) -> Arc<str> {
        if let Some(p) = self
            .seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return p.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = seen.get(path) {
            return p.clone();
        }
        if seen.len() >= self.max {
            return Arc::from(OTHER);
        }
        let p: Arc<str> = Arc::from(path);
        seen.insert(p.clone());
        p
    }
}

impl fmt::Debug for RouteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteGuard")
            .field("max", &self.max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_beyond_the_limit_become_other() {
        let g = RouteGuard::new(2);
        assert_eq!(&*g.admit("/a"), "/a");
        assert_eq!(&*g.admit("/b"), "/b");
        assert_eq!(&*g.admit("/c"), OTHER);
        assert_eq!(&*g.admit("/a"), "/a", "known paths stay");
    }
}
