//! The JSON-lines exporter: one JSON object per span per line, to a file or stdout.
//! It needs no server, which makes it the embedded default.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value as Json};
use tokio::sync::{mpsc, oneshot};

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
///
/// The writes happen on a thread of the exporter's own (started with the first
/// export), never on the export thread: a writer that blocks (a stalled stdout
/// pipe, a full disk on NFS) makes exports wait cooperatively, so their deadline
/// cuts them off and the batch counts as dropped. A batch whose export gave up
/// before its write began is not written.
pub struct JsonLinesExporter {
    writer: Writer,
    service: String,
}

/// The writing thread, once started.
enum Writer {
    NotStarted(Box<dyn Write + Send>),
    Running(mpsc::Sender<Job>),
    /// It could not be started, or the exporter was shut down.
    Stopped,
}

struct Job {
    /// `None`: just flush.
    bytes: Option<Vec<u8>>,
    done: oneshot::Sender<io::Result<()>>,
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
            writer: Writer::NotStarted(Box::new(w)),
            service: Resource::default().service_name.into_owned(),
        }
    }

    /// The channel to the writing thread, starting it on first use.
    fn sender(&mut self) -> Result<mpsc::Sender<Job>, ExportError> {
        if let Writer::NotStarted(_) = self.writer {
            let Writer::NotStarted(out) = std::mem::replace(&mut self.writer, Writer::Stopped)
            else {
                unreachable!()
            };
            // One batch being written and one waiting: more waits in `export`.
            let (tx, rx) = mpsc::channel(1);
            std::thread::Builder::new()
                .name("tracewire-json".into())
                .spawn(move || write_jobs(out, rx))
                .map_err(|e| ExportError::new(format!("cannot start the JSON writer: {e}")))?;
            self.writer = Writer::Running(tx);
        }
        match &self.writer {
            Writer::Running(tx) => Ok(tx.clone()),
            _ => Err(ExportError::new("the JSON writer is stopped")),
        }
    }

    /// Hands `bytes` (or a flush) to the writing thread and waits, without
    /// blocking, until it is written.
    async fn write(&mut self, bytes: Option<Vec<u8>>) -> Result<(), ExportError> {
        let tx = self.sender()?;
        let (done, written) = oneshot::channel();
        let gone = || ExportError::new("the JSON writer stopped");
        tx.send(Job { bytes, done }).await.map_err(|_| gone())?;
        written.await.map_err(|_| gone())?.map_err(ExportError::new)
    }
}

/// The writing thread: writes and flushes each job in turn, skipping the ones
/// whose export already gave up, until the exporter is dropped.
fn write_jobs(mut out: Box<dyn Write + Send>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        if job.done.is_closed() {
            continue;
        }
        let written = match &job.bytes {
            Some(bytes) => out.write_all(bytes).and_then(|()| out.flush()),
            None => out.flush(),
        };
        let _ = job.done.send(written);
    }
    let _ = out.flush();
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
        let mut bytes = Vec::with_capacity(batch.len() * 512);
        for span in batch {
            serde_json::to_writer(&mut bytes, &span_to_json(span, &self.service))
                .map_err(ExportError::new)?;
            bytes.push(b'\n');
        }
        self.write(Some(bytes)).await
    }
    async fn shutdown(&mut self) -> Result<(), ExportError> {
        match self.writer {
            // Nothing was ever written.
            Writer::NotStarted(_) | Writer::Stopped => Ok(()),
            Writer::Running(_) => {
                let flushed = self.write(None).await;
                // The thread ends when it has written what it has.
                self.writer = Writer::Stopped;
                flushed
            }
        }
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
