//! The process-wide tracer provider, for binaries that want one.
//!
//! Library crates never call [`set_tracer_provider`]; they take a [`Tracer`] or call
//! [`tracer`], which records nothing until the binary installs a provider.

use std::sync::RwLock;
use std::time::Duration;

use crate::export::ExportError;
use crate::trace::{Str, Tracer, TracerProvider};

static GLOBAL: RwLock<Option<TracerProvider>> = RwLock::new(None);

/// Installs `provider` as the process-wide provider; returns the previous one.
pub fn set_tracer_provider(provider: TracerProvider) -> Option<TracerProvider> {
    GLOBAL
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .replace(provider)
}

/// The process-wide provider, if one is installed.
pub fn tracer_provider() -> Option<TracerProvider> {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A tracer from the process-wide provider, or a no-op tracer if none is installed.
/// Keep the tracer rather than calling this per span.
pub fn tracer(scope: impl Into<Str>) -> Tracer {
    match tracer_provider() {
        Some(p) => p.tracer(scope),
        None => Tracer::noop(),
    }
}

/// Removes the process-wide provider and shuts it down within `timeout`.
pub fn shutdown_tracer_provider(timeout: Duration) -> Result<(), ExportError> {
    let provider = GLOBAL.write().unwrap_or_else(|e| e.into_inner()).take();
    match provider {
        Some(p) => p.shutdown(timeout),
        None => Ok(()),
    }
}
