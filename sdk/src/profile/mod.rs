//! CPU profiling with labels (Linux). This module holds the per-thread sampler
//! primitives the CPU profiler is built on; the only `unsafe` code of the crate
//! lives in its `sampler` submodule.

#[cfg(target_os = "linux")]
pub(crate) mod sampler;
