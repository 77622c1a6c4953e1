//! Bridges to the rest of the Rust tracing world, each behind its own feature.
//!
//! - `tracing` (feature `tracing`): a `tracing-subscriber` layer that turns
//!   `tracing` spans (`#[instrument]`) into tracewire spans and makes their context
//!   and labels current while they are entered.
//! - `opentelemetry` (feature `opentelemetry`): span contexts converted both ways,
//!   and an exporter adapter that sends tracewire spans through any
//!   `opentelemetry_sdk` span exporter (OTLP included).

#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub mod tracing;

#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod opentelemetry;
