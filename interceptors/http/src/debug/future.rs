//! The response future of [`PprofService`](super::PprofService).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tracewire::alloc::{HeapProfile, SampleType};
use tracewire::profile::{CustomProfile, Profile, Profiler};

use super::query::CpuRequest;
use super::render;

/// What is done with a finished profile, for [`Render::Then`].
pub(crate) type ThenFn = Box<dyn FnOnce(&Profile) -> Response<Full<Bytes>> + Send>;

/// What a response is made of, once its profile is ready. Symbolizing and encoding
/// take a while, so they run on tokio's blocking pool.
pub(crate) enum Render {
    /// Stop the CPU profile and answer gzip'd pprof.
    Cpu(Profiler),
    /// Stop the CPU profile and answer a flame graph of the samples the request
    /// focuses on.
    Flamegraph(Profiler, CpuRequest),
    /// Answer the custom profile as gzip'd pprof.
    Custom(CustomProfile),
    /// Answer a flame graph of the samples of a finished profile the request
    /// focuses on.
    FlamegraphOf(Arc<Profile>, CpuRequest),
    /// Stop the CPU profile and answer what the function makes of it.
    Then(Profiler, ThenFn),
    /// Answer the heap profile now (minus `earlier`, if given) with `default`
    /// shown first.
    Heap(Option<Box<HeapProfile>>, SampleType),
}

impl fmt::Debug for Render {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Render::Cpu(p) => f.debug_tuple("Cpu").field(p).finish(),
            Render::Flamegraph(p, r) => f.debug_tuple("Flamegraph").field(p).field(r).finish(),
            Render::Custom(p) => f.debug_tuple("Custom").field(p).finish(),
            Render::FlamegraphOf(_, r) => f.debug_tuple("FlamegraphOf").field(r).finish(),
            Render::Then(p, _) => f.debug_tuple("Then").field(p).finish(),
            Render::Heap(e, t) => f.debug_tuple("Heap").field(&e.is_some()).field(t).finish(),
        }
    }
}

impl Render {
    fn run(self) -> Response<Full<Bytes>> {
        match self {
            Render::Cpu(profiler) => match profiler.stop() {
                Ok(profile) => render::cpu(&profile),
                Err(e) => render::stop_failed(&e),
            },
            Render::Flamegraph(profiler, request) => match profiler.stop() {
                Ok(profile) => render::flamegraph(&profile, &request),
                Err(e) => render::stop_failed(&e),
            },
            Render::Custom(profile) => render::custom(&profile),
            Render::FlamegraphOf(profile, request) => render::flamegraph(&profile, &request),
            Render::Then(profiler, then) => match profiler.stop() {
                Ok(profile) => then(&profile),
                Err(e) => render::stop_failed(&e),
            },
            Render::Heap(earlier, default) => {
                let now = HeapProfile::take();
                let profile = match earlier {
                    Some(e) => now.delta(&e),
                    None => now,
                };
                render::heap(&profile, default)
            }
        }
    }
}

pin_project! {
    /// Response future of [`PprofService`](super::PprofService): ready at once for
    /// the index and errors; for a CPU profile, waits the requested seconds, then
    /// encodes on tokio's blocking pool. Dropping it stops a running profile.
    #[derive(Debug)]
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State {
        Ready { response: Option<Response<Full<Bytes>>> },
        Profiling { #[pin] sleep: Sleep, render: Option<Render> },
        Start { render: Option<Render> },
        Rendering { handle: JoinHandle<Response<Full<Bytes>>> },
    }
}

impl ResponseFuture {
    pub(crate) fn ready(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn render(render: Render) -> Self {
        ResponseFuture {
            state: State::Start {
                render: Some(render),
            },
        }
    }

    /// Renders after `wait` (the profile runs meanwhile).
    pub(crate) fn after(wait: Duration, render: Render) -> Self {
        ResponseFuture {
            state: State::Profiling {
                sleep: tokio::time::sleep(wait),
                render: Some(render),
            },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Ready { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => panic!("ResponseFuture polled after completion"),
                },
                StateProj::Profiling { sleep, render } => {
                    ready!(sleep.poll(cx));
                    let render = render.take();
                    state.set(State::Start { render });
                }
                StateProj::Start { render } => match render.take() {
                    Some(render) => {
                        let handle = tokio::task::spawn_blocking(move || render.run());
                        state.set(State::Rendering { handle });
                    }
                    None => panic!("ResponseFuture polled after completion"),
                },
                StateProj::Rendering { handle } => {
                    let response = match ready!(Pin::new(handle).poll(cx)) {
                        Ok(response) => response,
                        Err(e) => render::text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("rendering the profile failed: {e}\n"),
                        ),
                    };
                    state.set(State::Ready { response: None });
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
