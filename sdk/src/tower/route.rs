//! Route names for spans and the `http-path` label, guarded against cardinality
//! blow-up and interned, so a request costs no allocation for them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, RwLock};

use crate::labels::LabelSet;
use http::Method;

/// What a route needs per request, made once per distinct route.
#[derive(Debug)]
pub(crate) struct Route {
    /// The route (`/users/{id}`, a raw path, `other` or `unmatched`).
    pub(crate) name: &'static str,
    /// `{label_key}={name}`.
    pub(crate) labels: LabelSet,
    /// `METHOD route` for the standard methods, then `_OTHER route`.
    span_names: [&'static str; METHODS.len() + 1],
    /// Whether a request matched a route (else: no `http.route`).
    matched: bool,
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

const METHOD_NAMES: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// The method as a static string; methods outside the standard set are `_OTHER`
/// (as the OpenTelemetry HTTP conventions say), so they cannot grow cardinality.
pub(crate) fn method_str(m: &Method) -> &'static str {
    METHODS
        .iter()
        .position(|k| k == m)
        .map_or("_OTHER", |i| METHOD_NAMES[i])
}

impl Route {
    /// The `http.route` attribute: none for an unmatched request.
    pub(crate) fn http_route(&self) -> Option<&'static str> {
        self.matched.then_some(self.name)
    }

    /// The span name for `method`.
    pub(crate) fn span_name(&self, method: &Method) -> &'static str {
        let i = METHODS
            .iter()
            .position(|k| k == method)
            .unwrap_or(METHODS.len());
        self.span_names[i]
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Keeps at most `max` distinct routes; every route after that is `other`, so a
/// client requesting random URLs cannot grow the profiler's label values (or a
/// metrics backend's series) without bound. Admitted routes are interned for the
/// life of the process, once per process whatever the number of guards: their
/// number is bounded by the guards' `max`.
pub(crate) struct RouteGuard {
    max: usize,
    label_key: &'static str,
    seen: RwLock<HashMap<Box<str>, &'static Route>>,
    other: &'static Route,
}

/// The value used once the guard is full.
pub(crate) const OTHER: &str = "other";

/// The route of a request a route function matched to no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Routes by label key, then name.
type Routes = HashMap<&'static str, HashMap<Box<str>, &'static Route>>;

/// Every route interned so far: a route admitted by several guards (layers
/// rebuilt, several servers) is leaked once.
static INTERNED: LazyLock<RwLock<Routes>> = LazyLock::new(Default::default);

#[cfg(test)]
thread_local! {
    static LEAKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many routes this thread has interned (leaked) so far.
#[cfg(test)]
pub(crate) fn interned_on_this_thread() -> usize {
    LEAKED.with(|n| n.get())
}

/// The process's one `Route` for `name` under `label_key`.
fn intern(name: &str, label_key: &'static str) -> &'static Route {
    let known = |all: &Routes| all.get(label_key).and_then(|m| m.get(name)).copied();
    if let Some(r) = known(&INTERNED.read().unwrap_or_else(|e| e.into_inner())) {
        return r;
    }
    let mut all = INTERNED.write().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = known(&all) {
        return r;
    }
    #[cfg(test)]
    LEAKED.with(|n| n.set(n.get() + 1));
    let name = leak(name.to_owned());
    let mut span_names = [""; METHODS.len() + 1];
    for (i, m) in METHOD_NAMES.iter().enumerate() {
        span_names[i] = leak(format!("{m} {name}"));
    }
    // An unknown method's span is `HTTP {route}` (OpenTelemetry HTTP conventions).
    span_names[METHODS.len()] = leak(format!("HTTP {name}"));
    let route = Box::leak(Box::new(Route {
        name,
        labels: LabelSet::new([(label_key, name)]),
        span_names,
        matched: true,
    }));
    all.entry(label_key).or_default().insert(name.into(), route);
    route
}

/// The route of a request that matched none (an axum 404): spans named by the
/// method alone, as the OpenTelemetry HTTP conventions say, no `http.route`, and
/// `http-path=unmatched`. It takes no slot of any guard.
pub(crate) fn unmatched() -> &'static Route {
    static ROUTE: LazyLock<Route> = LazyLock::new(|| {
        let mut span_names = ["HTTP"; METHODS.len() + 1];
        span_names[..METHODS.len()].copy_from_slice(&METHOD_NAMES);
        Route {
            name: UNMATCHED,
            labels: LabelSet::new([("http-path", UNMATCHED)]),
            span_names,
            matched: false,
        }
    });
    &ROUTE
}

impl RouteGuard {
    pub(crate) fn new(max: usize, label_key: &'static str) -> Self {
        RouteGuard {
            max,
            label_key,
            seen: RwLock::new(HashMap::new()),
            other: intern(OTHER, label_key),
        }
    }

    /// The interned route for `path` if it is one of the first `max` distinct
    /// routes seen, else `other`.
    pub(crate) fn admit(&self, path: &str) -> &'static Route {
        if let Some(r) = self
            .seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return r;
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = seen.get(path) {
            return r;
        }
        if seen.len() >= self.max {
            return self.other;
        }
        let r = intern(path, self.label_key);
        seen.insert(path.into(), r);
        r
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
        let g = RouteGuard::new(2, "http-path");
        assert_eq!(g.admit("/a").name, "/a");
        assert_eq!(g.admit("/b").name, "/b");
        assert_eq!(g.admit("/c").name, OTHER);
        assert_eq!(g.admit("/a").name, "/a", "known paths stay");
        assert_eq!(g.admit("/a").labels.get("http-path"), Some("/a"));
    }

    #[test]
    fn a_route_admitted_by_two_guards_is_interned_once() {
        let (a, b) = (
            RouteGuard::new(2, "http-path"),
            RouteGuard::new(2, "http-path"),
        );
        let before = interned_on_this_thread();
        let name = "/interned-once";
        assert!(std::ptr::eq(a.admit(name), b.admit(name)));
        assert_eq!(interned_on_this_thread() - before, 1);
    }

    #[test]
    fn unmatched_requests_are_named_by_their_method_alone() {
        let r = unmatched();
        assert_eq!(r.span_name(&Method::GET), "GET");
        assert_eq!(r.span_name(&Method::from_bytes(b"BREW").unwrap()), "HTTP");
        assert_eq!(r.http_route(), None);
        assert_eq!(r.labels.get("http-path"), Some(UNMATCHED));
    }

    #[test]
    fn span_names_use_static_methods_and_other() {
        let g = RouteGuard::new(2, "http-path");
        let r = g.admit("/u");
        assert_eq!(r.span_name(&Method::POST), "POST /u");
        let custom = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(r.span_name(&custom), "HTTP /u");
        assert_eq!(method_str(&custom), "_OTHER");
    }
}
