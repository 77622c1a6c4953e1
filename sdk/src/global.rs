//! The process-wide tracer provider, for binaries that want one.
//!
//! Library crates never call [`set_tracer_provider`]; they take a [`Tracer`] or call
//! [`tracer`], whose tracer records into whichever provider the binary installs,
//! also one installed after the library took the tracer (in a `static`, a
//! constructor, a layer built before `main` set things up).
//!
//! ```
//! use std::time::Duration;
//! use tracewire::export::InMemoryExporter;
//! use tracewire::{global, TracerProvider};
//!
//! let tracer = global::tracer("my-library"); // before any provider: records nothing
//! let exporter = InMemoryExporter::new();
//! global::set_tracer_provider(
//!     TracerProvider::builder()
//!         .with_simple_exporter(exporter.clone())
//!         .build(),
//! );
//! tracer.start("work").end(); // into the provider installed since
//! assert_eq!(exporter.spans()[0].name, "work");
//! global::shutdown_tracer_provider(Duration::from_secs(5)).unwrap();
//! ```

use std::sync::RwLock;
use std::time::Duration;

use crate::export::{ShutdownError, ShutdownReport};
use crate::provider::TracerProvider;
use crate::trace::lifetime;
use crate::trace::{Str, Tracer};

static GLOBAL: RwLock<Option<TracerProvider>> = RwLock::new(None);

/// Installs `provider` as the process-wide provider; returns the previous one.
///
/// Global tracers start their next spans in `provider`; spans already started
/// end in the provider they started in. A provider once installed stays
/// allocated for the life of the process (global tracers reach it without a
/// handle), though it shuts down as usual when its last handle drops.
pub fn set_tracer_provider(provider: TracerProvider) -> Option<TracerProvider> {
    let pinned = provider.pin();
    let mut global = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    lifetime::set_current(Some(pinned));
    global.replace(provider)
}

/// The process-wide provider, if one is installed.
pub fn tracer_provider() -> Option<TracerProvider> {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A tracer that records into the process-wide provider installed when each span
/// starts (nothing while none is installed). Keep the tracer rather than calling
/// this per span; it may be taken before the provider is installed.
pub fn tracer(scope: impl Into<Str>) -> Tracer {
    Tracer::global(scope.into())
}

/// Removes the process-wide provider and shuts it down within `timeout` (see
/// [`TracerProvider::shutdown`]); a report of nothing if none was installed.
pub fn shutdown_tracer_provider(timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
    let provider = {
        let mut global = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
        lifetime::set_current(None);
        global.take()
    };
    match provider {
        Some(p) => p.shutdown(timeout),
        None => Ok(ShutdownReport::default()),
    }
}
