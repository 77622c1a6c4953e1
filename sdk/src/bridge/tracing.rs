//! `tracing` spans as tracewire spans: add [`TracewireLayer`] to a
//! `tracing_subscriber` registry, and every `tracing` span (`#[instrument]`,
//! `info_span!`) becomes a tracewire span.
//!
//! - Parents: a contextual `tracing` span's parent is the current tracewire context,
//!   which already holds the innermost entered `tracing` span *or* a span started
//!   with tracewire's API inside it, whichever is nearer; an explicit `parent:`
//!   wins; `parent: None` starts a new trace.
//! - Fields become attributes (also those recorded later); events become span
//!   events; `otel.name` renames the span and `otel.kind` (`server`, `client`,
//!   `producer`, `consumer`) sets its kind.
//! - Entering a span (every poll of an `#[instrument]`ed future) makes its context
//!   current, so the CPU profiler labels samples right on any worker thread, and
//!   fields chosen with [`TracewireLayer::with_label_fields`] become profiler
//!   labels.
//!
//! **Give the layer a filter.** The libraries under a service (h2, hyper, tower,
//! tonic) have `tracing` spans of their own, on every frame and poll: without a
//! filter they outnumber the application's spans many times over (two requests
//! through a tonic service: 181 spans exported, 9 of them the application's).
//! Keep the application's targets, at the level you want:
//!
//! ```
//! use tracing_subscriber::filter::{LevelFilter, Targets};
//! use tracing_subscriber::prelude::*;
//! use tracewire::bridge::tracing::TracewireLayer;
//! use tracewire::export::InMemoryExporter;
//! use tracewire::TracerProvider;
//!
//! let exporter = InMemoryExporter::new();
//! let provider = TracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! // This crate's spans at INFO and above; nothing of the libraries underneath.
//! let only_the_app = Targets::new()
//!     .with_target(module_path!().split("::").next().unwrap(), LevelFilter::INFO);
//! let subscriber = tracing_subscriber::registry().with(
//!     TracewireLayer::new(provider.tracer("app"))
//!         .with_label_fields(["worker"])
//!         .with_filter(only_the_app),
//! );
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("purge", worker = "purge", batch = 3);
//!     span.in_scope(|| {
//!         assert_eq!(tracewire::labels::current().get("worker"), Some("purge"));
//!         // A library's span (h2 makes one per frame) is not exported.
//!         tracing::info_span!(target: "h2::proto::streams", "recv_frame").in_scope(|| {});
//!         // Nor is the application's own span below the chosen level.
//!         tracing::debug_span!("detail").in_scope(|| {});
//!     });
//! });
//! let names: Vec<_> = exporter.spans().iter().map(|s| s.name.to_string()).collect();
//! assert_eq!(names, ["purge"]);
//! ```

use std::cell::RefCell;
use std::fmt;

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::labels::LabelSet;
use crate::trace::{KeyValue, SpanKind, Str, Tracer};
use crate::{Context, ContextGuard};

/// The layer. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TracewireLayer {
    tracer: Tracer,
    label_fields: Vec<&'static str>,
}

/// What the layer keeps in each `tracing` span's extensions.
struct Bridged {
    ctx: Context,
}

thread_local! {
    /// Contexts attached by `on_enter`, to detach on the matching `on_exit`.
    static ENTERED: RefCell<Vec<(Id, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

impl TracewireLayer {
    /// A layer that records `tracing` spans with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        TracewireLayer {
            tracer,
            label_fields: Vec::new(),
        }
    }

    /// Makes these span fields profiler labels too (e.g. `worker` for
    /// `#[instrument(fields(worker = "purge"))]`).
    pub fn with_label_fields(mut self, fields: impl IntoIterator<Item = &'static str>) -> Self {
        self.label_fields.extend(fields);
        self
    }
}

/// Collects fields as attributes, and the special `otel.*` and `message` fields.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    name: Option<String>,
    kind: Option<SpanKind>,
    message: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: crate::Value) {
        match field.name() {
            "otel.name" => self.name = Some(value.to_string()),
            "otel.kind" => {
                self.kind = match value.to_string().to_ascii_lowercase().as_str() {
                    "server" => Some(SpanKind::Server),
                    "client" => Some(SpanKind::Client),
                    "producer" => Some(SpanKind::Producer),
                    "consumer" => Some(SpanKind::Consumer),
                    "internal" => Some(SpanKind::Internal),
                    _ => None,
                }
            }
            "message" => self.message = Some(value.to_string()),
            name => self
                .attributes
                .push(KeyValue::new(Str::Borrowed(name), value)),
        }
    }

    fn labels(&self, keys: &[&'static str]) -> LabelSet {
        LabelSet::new(self.attributes.iter().filter_map(|kv| {
            keys.iter()
                .find(|k| **k == kv.key)
                .map(|k| (Str::Borrowed(*k), Str::Owned(kv.value.to_string())))
        }))
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_owned().into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format!("{value:?}").into());
    }
}

impl<S> Layer<S> for TracewireLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = if attrs.is_root() {
            Context::new()
        } else if let Some(parent) = attrs.parent() {
            ctx.span(parent)
                .and_then(|p| p.extensions().get::<Bridged>().map(|b| b.ctx.clone()))
                .unwrap_or_default()
        } else {
            // Contextual: the current tracewire context holds the nearer of the
            // entered `tracing` span and any span started with tracewire's API.
            Context::current()
        };
        let name: Str = match fields.name.take() {
            Some(n) => n.into(),
            None => Str::Borrowed(attrs.metadata().name()),
        };
        let labels = fields.labels(&self.label_fields);
        let mut builder = self
            .tracer
            .span_builder(name)
            .with_parent(&parent)
            .with_kind(fields.kind.unwrap_or_default())
            .with_attributes(std::mem::take(&mut fields.attributes));
        if let (Some(file), Some(line)) = (attrs.metadata().file(), attrs.metadata().line()) {
            builder = builder
                .with_attribute(KeyValue::new("code.filepath", file))
                .with_attribute(KeyValue::new("code.lineno", i64::from(line)));
        }
        let new = parent.with_span(builder.start()).with_labels(labels);
        span.extensions_mut().insert(Bridged { ctx: new });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        let Some(bridged) = ext.get_mut::<Bridged>() else {
            return;
        };
        if let Some(name) = fields.name.take() {
            bridged.ctx.span().update_name(name);
        }
        let labels = fields.labels(&self.label_fields);
        bridged.ctx.span().set_attributes(fields.attributes);
        if !labels.is_empty() {
            bridged.ctx = bridged.ctx.with_labels(labels);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let target = if event.is_root() {
            return;
        } else if let Some(parent) = event.parent() {
            ctx.span(parent).and_then(|p| {
                p.extensions()
                    .get::<Bridged>()
                    .map(|b| b.ctx.span().clone())
            })
        } else {
            Some(crate::Span::current())
        };
        let Some(span) = target.filter(|s| s.is_recording()) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut attributes = fields.attributes;
        attributes.push(KeyValue::new("level", meta.level().as_str()));
        attributes.push(KeyValue::new("target", meta.target()));
        let name: Str = match fields.message {
            Some(m) => m.into(),
            None => Str::Borrowed(meta.name()),
        };
        span.add_event(name, attributes);
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let Some(cx) = span.extensions().get::<Bridged>().map(|b| b.ctx.clone()) else {
            return;
        };
        let guard = cx.attach();
        let _ = ENTERED.try_with(|e| e.borrow_mut().push((id.clone(), guard)));
    }

    fn on_exit(&self, id: &Id, _ctx: LayerContext<'_, S>) {
        let guard = ENTERED
            .try_with(|e| {
                let mut e = e.borrow_mut();
                let i = e.iter().rposition(|(entered, _)| entered == id)?;
                Some(e.remove(i).1)
            })
            .ok()
            .flatten();
        // Detach outside the borrow: dropping a context may end a span.
        drop(guard);
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let bridged = span.extensions_mut().remove::<Bridged>();
        if let Some(b) = bridged {
            b.ctx.span().end();
        }
    }
}
