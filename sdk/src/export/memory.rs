//! An exporter that keeps spans in memory, for tests.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{ExportError, SpanExporter};
use crate::trace::{Resource, SpanData, SpanId, TraceId};

/// Collects exported spans in memory. Clones share the same store, so keep one
/// clone to inspect what the pipeline exported.
///
/// ```
/// use tracewire::export::InMemoryExporter;
/// let exporter = InMemoryExporter::new();
/// assert!(exporter.spans().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryExporter {
    store: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    spans: Vec<SpanData>,
    resource: Option<Resource>,
    shut_down: bool,
}

impl InMemoryExporter {
    /// An empty exporter.
    pub fn new() -> Self {
        Self::default()
    }
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// A copy of the spans exported so far, in export order.
    pub fn spans(&self) -> Vec<SpanData> {
        self.store().spans.clone()
    }
    /// Removes and returns the spans exported so far.
    pub fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut self.store().spans)
    }
    /// How many spans were exported.
    pub fn len(&self) -> usize {
        self.store().spans.len()
    }
    /// Whether no span was exported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The exported span with `span_id`, if any.
    pub fn find(&self, span_id: SpanId) -> Option<SpanData> {
        self.store()
            .spans
            .iter()
            .find(|s| s.span_context.span_id() == span_id)
            .cloned()
    }
    /// The exported spans of one trace.
    pub fn trace(&self, trace_id: TraceId) -> Vec<SpanData> {
        self.store()
            .spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .cloned()
            .collect()
    }
    /// The resource the provider passed, if any.
    pub fn resource(&self) -> Option<Resource> {
        self.store().resource.clone()
    }
    /// Whether the pipeline shut the exporter down.
    pub fn is_shut_down(&self) -> bool {
        self.store().shut_down
    }
}

impl SpanExporter for InMemoryExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.store().spans.extend_from_slice(batch);
        Ok(())
    }
    async fn shutdown(&mut self) -> Result<(), ExportError> {
        self.store().shut_down = true;
        Ok(())
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.store().resource = Some(resource.clone());
    }
}
