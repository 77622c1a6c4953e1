//! A `/debug/pprof` endpoint that answers like Go's `net/http/pprof`.
//!
//! [`PprofService`] is a tower [`Service`](tower_service::Service) for [`http::Request`]s (any body type,
//! ignored) that answers with `http::Response<Full<Bytes>>`. Under its prefix
//! (default `/debug/pprof`) it serves:
//!
//! | path | answer |
//! |---|---|
//! | `/debug/pprof/` | an HTML index of the profiles below, with links |
//! | `/debug/pprof/profile?seconds=N&hz=F` | a CPU profile of the next `N` seconds (default 30, at most [`with_max_seconds`](PprofService::with_max_seconds)) sampled at `F` Hz (default 100), as gzip'd pprof with the samples' labels |
//! | `/debug/pprof/flamegraph?seconds=N&tagfocus=key:value` | a CPU profile of the next `N` seconds as an SVG flame graph, keeping only the samples whose labels hold every `tagfocus` (exact match; none given: all samples) |
//! | `/debug/pprof/heap` | the [heap profile](tracewire::alloc) (memory in use, `inuse_space` first), with labels and spans, when the program's global allocator is [`Profiled`](tracewire::alloc::Profiled) (else `404`); `?seconds=N`: what changed over the next `N` seconds |
//! | `/debug/pprof/allocs` | the same, `alloc_space` first (all allocations, freed or not) |
//! | `/debug/pprof/NAME` | the [custom profile](tracewire::profile::CustomProfile) `NAME`, as gzip'd pprof |
//!
//! so the usual tools work against a running server:
//!
//! ```text
//! go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=10
//! go tool pprof -tagfocus http-path:/user -top http://127.0.0.1:6060/debug/pprof/profile?seconds=10
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/blobstore.Open
//! ```
//!
//! One CPU profile runs at a time per process: a second `/profile` or `/flamegraph`
//! request while one runs gets `409 Conflict`. A bad query (`seconds=abc`,
//! `seconds=0`, a `tagfocus` without `:`) gets `400`, an unknown profile `404`,
//! a method other than `GET` `405`. The wait runs on the tokio timer and the
//! encoding on tokio's blocking pool, so the service needs a tokio runtime with
//! the time driver, as hyper servers have. Dropping the response future (the
//! client went away) stops the profile.
//!
//! Only the threads that registered with
//! [`register_current_thread`](tracewire::profile::register_current_thread) are
//! sampled with full stacks: register the runtime's workers in `on_thread_start`.
//!
//! The endpoint shows what the program is doing and lets any caller burn a little
//! CPU on profiling: bind it to loopback, or put it behind your own access check.
//!
//! # Mounting it in hyper
//!
//! ```no_run
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto::Builder;
//! use hyper_util::service::TowerToHyperService;
//! use tracewire_http::debug::PprofService;
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6060").await?;
//! let pprof = PprofService::new();
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(pprof.clone());
//!     tokio::spawn(async move {
//!         let _ = Builder::new(TokioExecutor::new())
//!             .serve_connection(TokioIo::new(stream), service)
//!             .await;
//!     });
//! }
//! # }
//! ```
//!
//! Beside other routes, send every request whose path starts with the prefix to
//! the service. Routers that strip the prefix before calling a nested service (as
//! axum's `nest_service("/debug/pprof", ...)` does) want `.with_prefix("/")`: the
//! index links are relative, so they work either way.

mod future;
mod query;
mod render;
pub mod tracez;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use tracewire::profile::{CustomProfile, Profiler};

pub use future::ResponseFuture;
pub use tracez::{Tracez, TracezConfig, TracezService};

/// Draws a CPU flame graph (SVG) of the samples of `profile` that carry every
/// `(key, value)` label of `tagfocus` (all samples if empty), as the
/// `/flamegraph` endpoint does. Returns the SVG and the number of samples in it.
pub fn flamegraph_svg(
    profile: &tracewire::profile::Profile,
    tagfocus: &[(String, String)],
) -> Result<(Vec<u8>, u64), String> {
    render::flamegraph_svg(profile, tagfocus, render::flamegraph_title(tagfocus))
}

use future::Render;

/// The `seconds` a CPU profile runs when the request does not say.
const DEFAULT_SECONDS: u64 = 30;
/// The sampling frequency when the request does not say.
const DEFAULT_HZ: u32 = 100;

/// A tower service answering like Go's `net/http/pprof`: CPU profiles with labels,
/// custom profiles, an index and a flame graph. See the [module docs](self).
///
/// Cloning is cheap (one reference count).
///
/// ```
/// use tracewire_http::debug::PprofService;
///
/// let pprof = PprofService::new().with_prefix("/admin/pprof").with_max_seconds(120);
/// # let _ = pprof;
/// ```
#[derive(Clone, Debug)]
pub struct PprofService {
    prefix: Arc<str>,
    max_seconds: u64,
}

impl Default for PprofService {
    fn default() -> Self {
        PprofService {
            prefix: Arc::from("/debug/pprof"),
            max_seconds: 60,
        }
    }
}

impl PprofService {
    /// The service under `/debug/pprof`, with CPU profiles of at most 60 seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves under `prefix` instead of `/debug/pprof` (a leading `/` is added and
    /// trailing ones dropped; `"/"` or `""` serves at the root).
    pub fn with_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        let trimmed = prefix.as_ref().trim_matches('/');
        self.prefix = if trimmed.is_empty() {
            Arc::from("")
        } else {
            Arc::from(format!("/{trimmed}"))
        };
        self
    }

    /// The longest CPU profile a request may ask for, in seconds (default 60, at
    /// least 1); longer requests are cut to it.
    pub fn with_max_seconds(mut self, seconds: u64) -> Self {
        self.max_seconds = seconds.max(1);
        self
    }

    /// What follows the prefix in `path`: `Some("")` for the index, `Some(name)`
    /// for one profile, `None` for paths that are not ours.
    fn route<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(&*self.prefix)?;
        if rest.is_empty() {
            return Some("");
        }
        let name = rest.strip_prefix('/')?;
        (!name.contains('/')).then_some(name)
    }

    fn handle(&self, method: &Method, path: &str, query: Option<&str>) -> ResponseFuture {
        let Some(name) = self.route(path) else {
            return ResponseFuture::ready(render::text(
                StatusCode::NOT_FOUND,
                format!("404 page not found: {path}\n"),
            ));
        };
        if method != Method::GET {
            let mut response = render::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed: use GET\n"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return ResponseFuture::ready(response);
        }
        let params = match query::parse(query) {
            Ok(params) => params,
            Err(e) => return ResponseFuture::ready(render::text(StatusCode::BAD_REQUEST, e)),
        };
        match name {
            "" if !path.ends_with('/') => ResponseFuture::ready(redirect_to_dir(path)),
            "" => ResponseFuture::ready(render::index(&self.prefix, self.limits().default_seconds)),
            "profile" | "flamegraph" => {
                let request = match query::CpuRequest::new(&params, self.limits()) {
                    Ok(r) => r,
                    Err(e) => {
                        return ResponseFuture::ready(render::text(StatusCode::BAD_REQUEST, e))
                    }
                };
                self.cpu_profile(name == "flamegraph", request)
            }
            "heap" | "allocs" => self.heap_profile(name == "heap", &params),
            name => match CustomProfile::lookup(&query::decode_path(name)) {
                Some(profile) => ResponseFuture::render(Render::Custom(profile)),
                None => ResponseFuture::ready(render::text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown profile {name:?}: see {}/ for the profiles there are\n",
                        self.prefix
                    ),
                )),
            },
        }
    }

    /// `/heap` or `/allocs`: the heap profile now, or (`?seconds=N`) what
    /// changed over the next `N` seconds, as Go's.
    fn heap_profile(&self, inuse: bool, params: &[(String, String)]) -> ResponseFuture {
        use tracewire::alloc::{self, HeapProfile, SampleType};
        if !alloc::is_installed() {
            return ResponseFuture::ready(render::text(
                StatusCode::NOT_FOUND,
                "no heap profile: the program's global allocator is not \
                 tracewire::alloc::Profiled (#[global_allocator] static A: \
                 tracewire::alloc::Profiled<std::alloc::System> = \
                 tracewire::alloc::Profiled::new(std::alloc::System);)\n"
                    .to_owned(),
            ));
        }
        let default = if inuse {
            SampleType::InuseSpace
        } else {
            SampleType::AllocSpace
        };
        let seconds = params.iter().find(|(k, _)| k == "seconds").map(|(_, v)| v);
        match seconds {
            None => ResponseFuture::render(Render::Heap(None, default)),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => ResponseFuture::after(
                    Duration::from_secs(s.min(self.max_seconds)),
                    Render::Heap(Some(Box::new(HeapProfile::take())), default),
                ),
                _ => ResponseFuture::ready(render::text(
                    StatusCode::BAD_REQUEST,
                    format!("bad seconds {v:?}: want a whole number of seconds, 1 or more\n"),
                )),
            },
        }
    }

    fn limits(&self) -> query::Limits {
        query::Limits {
            default_seconds: DEFAULT_SECONDS.min(self.max_seconds),
            max_seconds: self.max_seconds,
            default_hz: DEFAULT_HZ,
        }
    }

    fn cpu_profile(&self, flamegraph: bool, request: query::CpuRequest) -> ResponseFuture {
        let profiler = match start_profiler(Profiler::builder().with_frequency(request.hz)) {
            Ok(p) => p,
            Err(answer) => return ResponseFuture::ready(*answer),
        };
        let seconds = Duration::from_secs(request.seconds);
        let render = if flamegraph {
            Render::Flamegraph(profiler, request)
        } else {
            Render::Cpu(profiler)
        };
        ResponseFuture::after(seconds, render)
    }
}

/// Redirects `.../pprof` to `.../pprof/`, so the index's relative links resolve
/// under it (Go's `ServeMux` does the same).
fn redirect_to_dir(path: &str) -> Response<Full<Bytes>> {
    let last = path.rsplit('/').next().unwrap_or_default();
    let mut response = render::text(StatusCode::MOVED_PERMANENTLY, format!("moved to {path}/\n"));
    // The path came from a parsed URI, so it is a valid header value; if it
    // somehow is not, the client gets the message without a Location.
    if let Ok(location) = HeaderValue::from_str(&format!("{last}/")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Implements [`Service`] for a type with a `handle(&self, method, path, query)
/// -> ResponseFuture` method: any body type, ignored; always ready.
macro_rules! page_service {
    ($ty:ty) => {
        impl<B> tower_service::Service<http::Request<B>> for $ty {
            type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
            type Error = std::convert::Infallible;
            type Future = $crate::debug::ResponseFuture;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                let uri = request.uri();
                self.handle(request.method(), uri.path(), uri.query())
            }
        }
    };
}
pub(crate) use page_service;

page_service!(PprofService);

/// Starts a CPU profile, or says why not: `409` while one runs, `500` otherwise.
fn start_profiler(
    builder: tracewire::profile::ProfilerBuilder,
) -> Result<Profiler, Box<Response<Full<Bytes>>>> {
    builder.start().map_err(|e| {
        Box::new(if e.is_busy() {
            render::text(
                StatusCode::CONFLICT,
                "a CPU profile is already running: try again when it ends\n".to_owned(),
            )
        } else {
            render::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the CPU profiler: {e}\n"),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths_under_the_prefix_only() {
        let s = PprofService::new();
        assert_eq!(s.route("/debug/pprof"), Some(""));
        assert_eq!(s.route("/debug/pprof/"), Some(""));
        assert_eq!(s.route("/debug/pprof/profile"), Some("profile"));
        assert_eq!(s.route("/debug/pprofile"), None);
        assert_eq!(s.route("/debug/pprof/a/b"), None);
        assert_eq!(s.route("/other"), None);
    }

    #[test]
    fn prefix_is_normalized() {
        let s = PprofService::new().with_prefix("admin/pprof/");
        assert_eq!(&*s.prefix, "/admin/pprof");
        assert_eq!(s.route("/admin/pprof/x"), Some("x"));
        let root = PprofService::new().with_prefix("/");
        assert_eq!(root.route("/"), Some(""));
        assert_eq!(root.route("/profile"), Some("profile"));
    }

    #[test]
    fn max_seconds_caps_the_default_too() {
        let s = PprofService::new().with_max_seconds(0);
        assert_eq!(s.limits().max_seconds, 1);
        assert_eq!(s.limits().default_seconds, 1);
    }
}
