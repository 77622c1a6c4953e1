//! The JSON-lines exporter: one JSON object per span per line, to a file or stdout.
//! It needs no server, which makes it the embedded default.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value as Json};

use super::{ExportError, SpanExporter};
use crate::trace::{Array, KeyValue, Resource, SpanData, Status, Value};

/// Writes each span as one line of JSON:
///
/// ```json
/// {"traceId":"…32 hex…","spanId":"…16 hex…","parentSpanId":"…","name":"GET /user",
///  "kind":"server","service":"frontend","scope":"tracewire-http",
///  "startTimeUnixNano":1700000000000000000,"endTimeUnixNano":1700000000001000000,
///  "attributes":{"http.route":"/user"},"events":[…],"links":[…],
///  "status":{"code":"error","message":"…"},"sampled":true}
/// ```
///
/// `parentSpanId` is absent on roots; `events`, `links`, `status` and the
/// `dropped*Count` fields are absent when empty or zero.
pub struct JsonLinesExporter {
    out: Box<dyn Write + Send>,
    service: String,
}

impl JsonLinesExporter {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::writer(io::stdout())
    }

    /// Appends to the file at `path`, creating it and its parent directories.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f: File = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::writer(BufWriter::new(f)))
    }

    /// Writes to any writer.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        JsonLinesExporter {
            out: Box::new(w),
            service: Resource::default().service_name.into_owned(),
        }
    }

    fn write_batch(&mut self, batch: &[SpanData]) -> io::Result<()> {
        for span in batch {
            serde_json::to_writer(&mut self.out, &span_to_json(span, &self.service))?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter")
            .field("service", &self.service)
            .finish()
    }
}

impl SpanExporter for JsonLinesExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.write_batch(batch).map_err(ExportError::new)
    }
    async fn shutdown(&mut self) -> Result<(), ExportError> {
        self.out.flush().map_err(ExportError::new)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.service = resource.service_name.to_string();
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn value_to_json(v: &Value) -> Json {
    match v {
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(x) => json!(x),
        Value::Array(Array::String(a)) => json!(a),
        Value::Array(Array::Bool(a)) => json!(a),
        Value::Array(Array::I64(a)) => json!(a),
        Value::Array(Array::F64(a)) => json!(a),
    }
}

fn attributes_to_json(attrs: &[KeyValue]) -> Json {
    Json::Object(
        attrs
            .iter()
            .map(|kv| (kv.key.to_string(), value_to_json(&kv.value)))
            .collect(),
    )
}

/// The JSON object [`JsonLinesExporter`] writes for `span`.
pub(crate) fn span_to_json(span: &SpanData, service: &str) -> Json {
    let sc = &span.span_context;
    let mut o = Map::new();
    o.insert("traceId".into(), json!(sc.trace_id().to_string()));
    o.insert("spanId".into(), json!(sc.span_id().to_string()));
    if span.parent_span_id.is_valid() {
        o.insert(
            "parentSpanId".into(),
            json!(span.parent_span_id.to_string()),
        );
    }
    o.insert("name".into(), json!(span.name));
    o.insert("kind".into(), json!(span.kind.as_str()));
    o.insert("service".into(), json!(service));
    o.insert("scope".into(), json!(span.scope));
    o.insert(
        "startTimeUnixNano".into(),
        json!(unix_nanos(span.start_time)),
    );
    o.insert("endTimeUnixNano".into(), json!(unix_nanos(span.end_time)));
    o.insert("attributes".into(), attributes_to_json(&span.attributes));
    if !span.events.is_empty() {
        let events: Vec<Json> = span
            .events
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "timeUnixNano": unix_nanos(e.timestamp),
                    "attributes": attributes_to_json(&e.attributes),
                })
            })
            .collect();
        o.insert("events".into(), Json::Array(events));
    }
    if !span.links.is_empty() {
        let links: Vec<Json> = span
            .links
            .iter()
            .map(|l| {
                json!({
                    "traceId": l.span_context.trace_id().to_string(),
                    "spanId": l.span_context.span_id().to_string(),
                    "attributes": attributes_to_json(&l.attributes),
                })
            })
            .collect();
        o.insert("links".into(), Json::Array(links));
    }
    match &span.status {
        Status::Unset => {}
        Status::Ok => {
            o.insert("status".into(), json!({"code": "ok"}));
        }
        Status::Error { message } => {
            o.insert(
                "status".into(),
                json!({"code": "error", "message": message}),
            );
        }
    }
    for (key, n) in [
        ("droppedAttributesCount", span.dropped_attributes_count),
        ("droppedEventsCount", span.dropped_events_count),
        ("droppedLinksCount", span.dropped_links_count),
    ] {
        if n > 0 {
            o.insert(key.into(), json!(n));
        }
    }
    o.insert("sampled".into(), json!(sc.is_sampled()));
    Json::Object(o)
}
