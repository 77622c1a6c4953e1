//! The resource: the process that produces the spans.

use super::{KeyValue, Str};

/// Describes the process that produces spans: its service name and attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The service name (Zipkin's `localEndpoint.serviceName`).
    pub service_name: Str,
    /// Further attributes of the process.
    pub attributes: Vec<KeyValue>,
}

impl Resource {
    /// A resource for `service_name`.
    pub fn new(service_name: impl Into<Str>) -> Self {
        Resource {
            service_name: service_name.into(),
            attributes: Vec::new(),
        }
    }
    /// This resource with one more attribute.
    pub fn with_attribute(mut self, kv: KeyValue) -> Self {
        self.attributes.push(kv);
        self
    }
}

impl Default for Resource {
    fn default() -> Self {
        Resource::new("unknown_service")
    }
}
