//! Bridges to the rest of the Rust tracing world, each behind its own feature.
//!
//! - `tracing` (feature `tracing`): a `tracing-subscriber` layer that turns
//!   `tracing` spans (`#[instrument]`) into tracewire spans and makes their context
//!   and labels current while they are entered.

#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub mod tracing;
