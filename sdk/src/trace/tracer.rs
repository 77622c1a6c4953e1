//! The tracer provider (configuration and pipeline), tracers and the span builder.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::clock;
use super::lifetime::{self, Lifetime, Live, Owner, Pinned};
use super::record::Record;
use super::span::limit_attributes;
use super::{
    AlwaysOff, AlwaysOn, KeyValue, Link, ParentBased, Sampler, SamplingDecision, SamplingParams,
    SamplingState, Span, SpanContext, SpanId, SpanKind, SpanLimits, Str, TraceFlags, TraceId,
    TraceIdRatio, TraceState,
};
use crate::context::Context;
use crate::counter::StripedCounter;
use crate::export::{
    shutdown_all, BatchConfig, BatchProcessor, ExportError, ShutdownError, ShutdownReport,
    SimpleProcessor, SpanExporter, SpanObserver, SpanProcessor, SpanStart, Stats,
};

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

/// The state every tracer and span of one provider shares.
///
/// Handles (`TracerProvider`, `Tracer`) share it through an `Arc`; recording spans
/// refer to it without a shared reference count (which would make every span
/// start and end contend across cores): see the [`lifetime`] module for how it is
/// freed once the last handle and the last open span are gone.
pub(crate) struct ProviderInner {
    enabled: AtomicBool,
    shut_down: AtomicBool,
    /// `OTEL_SDK_DISABLED=true`: never enabled, no processors.
    sdk_disabled: bool,
    sampler: Box<dyn Sampler>,
    /// `sampler.always_drops()`, asked once: an unsampled span is then decided
    /// without a call through the trait.
    always_drops: bool,
    pub(crate) limits: SpanLimits,
    processors: Box<[Arc<dyn SpanProcessor>]>,
    /// The one processor when it is a batch processor: ended spans' records go
    /// to it as they are, their times converted by its export thread.
    batch_only: Option<Arc<BatchProcessor>>,
    observers: Box<[Arc<dyn SpanObserver>]>,
    resource: Resource,
    /// Recording spans the sampler did not sample (`started` is the other
    /// recording spans: the opened ones minus these).
    record_only: StripedCounter,
    ended: StripedCounter,
    pub(crate) lifetime: Lifetime,
}

impl ProviderInner {
    #[inline]
    pub(crate) fn on_end(&self, mut rec: Box<Record>) {
        self.ended.add(1);
        if !self.observers.is_empty() {
            rec.stamp();
            for o in self.observers.iter() {
                o.on_end(&rec.data);
            }
        }
        if let Some(batch) = &self.batch_only {
            batch.push_record(rec);
            return;
        }
        let data = rec.take_data();
        Record::give(rec);
        if let Some((last, rest)) = self.processors.split_last() {
            for p in rest {
                p.on_end(data.clone());
            }
            last.on_end(data);
        }
    }

    /// Flushes every processor, waiting at most `timeout` in all.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), ExportError> {
        let deadline = std::time::Instant::now() + timeout;
        // All started at once, so they run side by side under one deadline.
        let handles: Vec<_> = self
            .processors
            .iter()
            .map(|p| p.flush().with_deadline(deadline))
            .collect();
        let mut result = Ok(());
        for handle in handles {
            if let Err(e) = handle.await {
                result = Err(e);
            }
        }
        result
    }

    fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            let s = self.stats();
            return Err(ShutdownError::new(
                ShutdownReport::new(s.exported, s.dropped),
                Some(ExportError::shut_down()),
            ));
        }
        self.enabled.store(false, Ordering::Release);
        shutdown_all(&self.processors, timeout)
    }

    /// The last handle is gone: shut down (flushing for up to 5 seconds) unless
    /// that was done.
    pub(crate) fn on_last_handle(&self) {
        if !self.shut_down.load(Ordering::Acquire) {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }

    fn stats(&self) -> Stats {
        let ended = self.ended.sum();
        let mut stats = Stats {
            // Read after `ended`, so that a snapshot never shows more ended than
            // started.
            started: self
                .lifetime
                .opened()
                .saturating_sub(self.record_only.sum()),
            ended,
            ..Stats::default()
        };
        for p in self.processors.iter() {
            let s = p.stats();
            stats.exported += s.exported;
            stats.dropped += s.dropped;
            stats.export_failures += s.export_failures;
        }
        stats
    }
}

/// The configured tracing pipeline: sampler, limits, processors and exporters.
///
/// Build one in your binary (libraries take a [`Tracer`] or use
/// [`global::tracer`](crate::global::tracer)). Clones, and the tracers made from
/// them, share the pipeline; when the last of them drops, the pipeline is shut
/// down (flushing pending spans for up to 5 seconds). Call
/// [`shutdown`](TracerProvider::shutdown) to choose the deadline and learn what
/// was delivered. Everything the pipeline holds (its thread, queues, queued and
/// exported spans) is freed once the last handle and the last open span are gone.
///
/// ```
/// use tracewire::export::InMemoryExporter;
/// use tracewire::TracerProvider;
///
/// let exporter = InMemoryExporter::new();
/// let provider = TracerProvider::builder()
///     .with_service_name("checkout")
///     .with_simple_exporter(exporter.clone())
///     .build();
/// let tracer = provider.tracer("example");
/// tracer.in_span("work", |_cx| {});
/// assert_eq!(exporter.spans()[0].name, "work");
/// ```
#[derive(Clone)]
pub struct TracerProvider {
    owner: Arc<Owner>,
}

impl TracerProvider {
    /// A builder with the defaults: parent-based always-on sampling, default limits,
    /// no processor.
    pub fn builder() -> TracerProviderBuilder {
        TracerProviderBuilder::default()
    }

    /// A tracer whose spans name `scope` as their instrumentation scope. It keeps
    /// the pipeline alive: the pipeline shuts down when the last provider handle
    /// and tracer are gone.
    pub fn tracer(&self, scope: impl Into<Str>) -> Tracer {
        Tracer {
            target: Target::Provider(Arc::clone(&self.owner)),
            scope: scope.into(),
        }
    }

    fn inner(&self) -> &ProviderInner {
        self.owner.inner()
    }

    /// Pins the provider (never freed) for the process-wide slot.
    pub(crate) fn pin(&self) -> Pinned {
        self.owner.pin()
    }

    /// Counters of this pipeline: spans started, ended, exported, dropped, and
    /// failed exports. Only sampled spans are counted. With several processors,
    /// exported and dropped add up over all of them.
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// Stops or resumes collection at runtime. While stopped, new spans are
    /// non-recording (they still propagate their parent) and cost one atomic load.
    /// A provider built with `OTEL_SDK_DISABLED=true` stays stopped.
    pub fn set_enabled(&self, enabled: bool) {
        let inner = self.inner();
        if !inner.shut_down.load(Ordering::Acquire) && !inner.sdk_disabled {
            inner.enabled.store(enabled, Ordering::Release);
        }
    }

    /// Whether collection is running.
    pub fn is_enabled(&self) -> bool {
        self.inner().enabled.load(Ordering::Relaxed)
    }

    /// Exports every span ended before this call, waiting at most `timeout`. An
    /// error when an export since the previous flush failed: spans were lost.
    pub fn force_flush(&self, timeout: Duration) -> Result<(), ExportError> {
        let mut result = Ok(());
        for p in self.inner().processors.iter() {
            if let Err(e) = p.force_flush(timeout) {
                result = Err(e);
            }
        }
        result
    }

    /// Stops collection and shuts the processors down: every span ended before the
    /// call is exported before `timeout` or counted as dropped, whatever the
    /// exporters do (an exporter still blocking its thread at the deadline has
    /// what it held counted as dropped).
    ///
    /// The report says what the pipeline delivered over its life: `exported +
    /// dropped` is [`Stats::ended`] (for each processor). It is an error when any
    /// span was dropped (then or earlier: a full queue, a failed export), when an
    /// exporter's shutdown failed or the deadline passed, or when the provider was
    /// already shut down; the error carries the same report.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tracewire::export::InMemoryExporter;
    /// use tracewire::TracerProvider;
    ///
    /// let provider = TracerProvider::builder()
    ///     .with_batch_exporter(InMemoryExporter::new())
    ///     .build();
    /// provider.tracer("app").start("work").end();
    /// match provider.shutdown(Duration::from_secs(5)) {
    ///     Ok(report) => assert_eq!(report.exported, 1),
    ///     Err(e) => eprintln!("tracing: {e}"), // "3 of 10 spans dropped (7 exported)"
    /// }
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.inner().shutdown(timeout)
    }

    /// The provider's resource.
    pub fn resource(&self) -> &Resource {
        &self.inner().resource
    }
}

impl fmt::Debug for TracerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("TracerProvider")
            .field("resource", &inner.resource)
            .field("sampler", &inner.sampler)
            .field("processors", &inner.processors)
            .field("observers", &inner.observers)
            .field("enabled", &inner.enabled.load(Ordering::Relaxed))
            .finish()
    }
}

/// Configures a [`TracerProvider`].
///
/// # Configuration from the environment
///
/// [`from_env`](Self::from_env) reads the OpenTelemetry SDK variables (see the
/// [`env`](crate::env) module). **Values set in code win**, whichever order the
/// calls come in: `from_env` only records what the environment says, and
/// [`build`](Self::build) uses it for what the code did not set:
///
/// | variable | used unless the code called | default |
/// |---|---|---|
/// | `OTEL_SDK_DISABLED=true` | (always applies) a provider that records nothing, with no processors | `false` |
/// | `OTEL_SERVICE_NAME` | [`with_service_name`](Self::with_service_name), [`with_resource`](Self::with_resource) | `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else the [fallback](Self::with_fallback_service_name), else `unknown_service` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | a resource attribute of the same key in [`with_resource`](Self::with_resource) | none |
/// | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | [`with_sampler`](Self::with_sampler) | `parentbased_always_on` |
/// | `OTEL_BSP_*` | [`with_batch_exporter_config`](Self::with_batch_exporter_config) (its config is used as given) | [`BatchConfig::default`] |
///
/// The `OTEL_BSP_*` variables configure the processors added with
/// [`with_batch_exporter`](Self::with_batch_exporter); see
/// [`BatchConfig::from_env`].
///
/// ```
/// use tracewire::TracerProvider;
///
/// let env = |name: &str| (name == "OTEL_SERVICE_NAME").then(|| "from-env".to_owned());
/// // Code wins, before or after `from_env`.
/// let provider = TracerProvider::builder()
///     .with_service_name("from-code")
///     .from_env_with(env)
///     .build();
/// assert_eq!(provider.resource().service_name, "from-code");
/// // The fallback only names a service neither the code nor the environment names.
/// let provider = TracerProvider::builder()
///     .with_fallback_service_name("fallback")
///     .from_env_with(env)
///     .build();
/// assert_eq!(provider.resource().service_name, "from-env");
/// ```
#[derive(Debug, Default)]
pub struct TracerProviderBuilder {
    sampler: Option<Box<dyn Sampler>>,
    limits: SpanLimits,
    processors: Vec<Pending>,
    observers: Vec<Arc<dyn SpanObserver>>,
    resource: Resource,
    /// Whether the code set the service name (directly or with a resource).
    service_name_set: bool,
    fallback_service_name: Option<Str>,
    env: Option<Env>,
}

/// A processor, or a batch processor to start at `build` with the batch
/// configuration then known (from the environment or the default).
enum Pending {
    Ready(Arc<dyn SpanProcessor>),
    Started(Arc<BatchProcessor>),
    Batch(Box<dyn FnOnce(BatchConfig) -> BatchProcessor + Send>),
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::Ready(p) => p.fmt(f),
            Pending::Started(p) => p.fmt(f),
            Pending::Batch(_) => f.write_str("BatchProcessor(not started)"),
        }
    }
}

/// What [`TracerProviderBuilder::from_env`] read.
#[derive(Debug)]
struct Env {
    disabled: bool,
    service_name: Option<Str>,
    attributes: Vec<KeyValue>,
    sampler: Option<Box<dyn Sampler>>,
    batch: BatchConfig,
}

impl TracerProviderBuilder {
    /// Reads the OpenTelemetry SDK variables from the process environment; what
    /// the code sets wins (see [Configuration from the
    /// environment](Self#configuration-from-the-environment)). Invalid values are
    /// reported on standard error and ignored.
    pub fn from_env(self) -> Self {
        self.from_env_with(crate::env::system)
    }

    /// Like [`from_env`](Self::from_env), reading each variable with `lookup`
    /// (for tests, or another configuration source).
    pub fn from_env_with(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        let attributes = resource_attributes(lookup);
        let service_name = crate::env::get(lookup, "OTEL_SERVICE_NAME")
            .map(Str::from)
            .or_else(|| {
                attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| Str::from(kv.value.to_string()))
            });
        self.env = Some(Env {
            disabled: crate::env::boolean(lookup, "OTEL_SDK_DISABLED"),
            service_name,
            attributes: attributes
                .into_iter()
                .filter(|kv| kv.key != "service.name")
                .collect(),
            sampler: sampler(lookup),
            batch: BatchConfig::from_env_with(lookup),
        });
        self
    }

    /// Uses `sampler` (default: parent-based, always on for roots). Wins over
    /// `OTEL_TRACES_SAMPLER`.
    pub fn with_sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.sampler = Some(Box::new(sampler));
        self
    }
    /// Uses `limits` (default: [`SpanLimits::default`]).
    pub fn with_span_limits(mut self, limits: SpanLimits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets the service name of the resource. Wins over `OTEL_SERVICE_NAME`.
    pub fn with_service_name(mut self, name: impl Into<Str>) -> Self {
        self.resource.service_name = name.into();
        self.service_name_set = true;
        self
    }
    /// The service name used when neither the code
    /// ([`with_service_name`](Self::with_service_name),
    /// [`with_resource`](Self::with_resource)) nor the environment
    /// (`OTEL_SERVICE_NAME`, `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) gives
    /// one, instead of `unknown_service`: what a program calls itself by default.
    pub fn with_fallback_service_name(mut self, name: impl Into<Str>) -> Self {
        self.fallback_service_name = Some(name.into());
        self
    }
    /// Uses `resource`, service name included. Its attributes win over those of
    /// `OTEL_RESOURCE_ATTRIBUTES` with the same key; the others are added.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = resource;
        self.service_name_set = true;
        self
    }
    /// Adds a processor.
    pub fn with_processor(mut self, processor: impl SpanProcessor + 'static) -> Self {
        self.processors.push(Pending::Ready(Arc::new(processor)));
        self
    }
    /// Adds an observer: it sees each sampled span start and end, by reference, on
    /// the instrumented thread (see [`SpanObserver`]).
    pub fn with_observer(mut self, observer: impl SpanObserver + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }
    /// Adds `exporter` behind a [`BatchProcessor`] with the default configuration,
    /// or the one the `OTEL_BSP_*` variables give if [`from_env`](Self::from_env)
    /// is used. The processor starts at [`build`](Self::build).
    pub fn with_batch_exporter(mut self, exporter: impl SpanExporter) -> Self {
        self.processors.push(Pending::Batch(Box::new(move |config| {
            BatchProcessor::new(exporter, config)
        })));
        self
    }
    /// Adds `exporter` behind a [`BatchProcessor`] configured by `config` (used
    /// as given: the `OTEL_BSP_*` variables do not apply; start from
    /// [`BatchConfig::from_env`] to honour them).
    pub fn with_batch_exporter_config(
        mut self,
        exporter: impl SpanExporter,
        config: BatchConfig,
    ) -> Self {
        let p = Arc::new(BatchProcessor::new(exporter, config));
        self.processors.push(Pending::Started(p));
        self
    }
    /// Adds `exporter` behind a [`SimpleProcessor`] (exports on the caller's thread:
    /// for tests and synchronous exporters).
    pub fn with_simple_exporter(self, exporter: impl SpanExporter) -> Self {
        self.with_processor(SimpleProcessor::new(exporter))
    }

    /// Builds the provider, applying what [`from_env`](Self::from_env) read to what
    /// the code did not set.
    pub fn build(self) -> TracerProvider {
        let mut resource = self.resource;
        let mut sampler = self.sampler;
        let mut batch = BatchConfig::default();
        let mut disabled = false;
        let mut env_service_name = None;
        if let Some(env) = self.env {
            disabled = env.disabled;
            env_service_name = env.service_name;
            sampler = sampler.or(env.sampler);
            batch = env.batch;
            for kv in env.attributes {
                if !resource.attributes.iter().any(|a| a.key == kv.key) {
                    resource.attributes.push(kv);
                }
            }
        }
        if !self.service_name_set {
            if let Some(name) = env_service_name.or(self.fallback_service_name) {
                resource.service_name = name;
            }
        }
        let mut batches: Vec<Arc<BatchProcessor>> = Vec::new();
        let processors: Vec<Arc<dyn SpanProcessor>> = if disabled {
            // Processors already started shut down as they drop here.
            Vec::new()
        } else {
            self.processors
                .into_iter()
                .map(|p| match p {
                    Pending::Ready(p) => p,
                    Pending::Started(p) => {
                        batches.push(Arc::clone(&p));
                        p
                    }
                    Pending::Batch(start) => {
                        let p = Arc::new(start(batch));
                        batches.push(Arc::clone(&p));
                        p
                    }
                })
                .collect()
        };
        let batch_only = match (&processors[..], batches.pop()) {
            ([_], Some(b)) => Some(b),
            _ => None,
        };
        clock::init();
        for p in &processors {
            p.set_resource(&resource);
        }
        let sampler = sampler.unwrap_or_else(|| Box::new(ParentBased::new(AlwaysOn)));
        let always_drops = sampler.always_drops();
        let inner = ProviderInner {
            enabled: AtomicBool::new(!disabled),
            shut_down: AtomicBool::new(false),
            sdk_disabled: disabled,
            sampler,
            always_drops,
            limits: self.limits,
            processors: processors.into_boxed_slice(),
            batch_only,
            observers: if disabled {
                Box::default()
            } else {
                self.observers.into_boxed_slice()
            },
            resource,
            record_only: StripedCounter::default(),
            ended: StripedCounter::default(),
            lifetime: Lifetime::default(),
        };
        TracerProvider {
            owner: Arc::new(Owner::new(inner)),
        }
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, keys and
/// values percent-encoded. A malformed value is discarded as a whole (reported),
/// as the OpenTelemetry resource specification says.
fn resource_attributes(lookup: &dyn Fn(&str) -> Option<String>) -> Vec<KeyValue> {
    const NAME: &str = "OTEL_RESOURCE_ATTRIBUTES";
    let Some(value) = crate::env::get(lookup, NAME) else {
        return Vec::new();
    };
    let mut attributes: Vec<KeyValue> = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let decoded = member.split_once('=').and_then(|(k, v)| {
            let key = crate::env::percent_decode(k.trim())?;
            let value = crate::env::percent_decode(v.trim())?;
            (!key.is_empty()).then_some((key, value))
        });
        let Some((key, value)) = decoded else {
            crate::env::warn_invalid(
                NAME,
                &value,
                format_args!("{member:?} is not a percent-encoded key=value"),
                "no attributes from it",
            );
            return Vec::new();
        };
        // A repeated key: the last one wins.
        attributes.retain(|kv| kv.key != key.as_str());
        attributes.push(KeyValue::new(key, value));
    }
    attributes
}

/// `OTEL_TRACES_SAMPLER_ARG` for the ratio samplers: within `0.0..=1.0`, default
/// (and instead of an invalid value) 1.0.
fn sampler_ratio(lookup: &dyn Fn(&str) -> Option<String>) -> f64 {
    const ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    let Some(arg) = crate::env::get(lookup, ARG) else {
        return 1.0;
    };
    match arg.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => r,
        Ok(_) => {
            crate::env::warn_invalid(ARG, &arg, "not within 0.0..=1.0", "1.0");
            1.0
        }
        Err(e) => {
            crate::env::warn_invalid(ARG, &arg, e, "1.0");
            1.0
        }
    }
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; `None` (the default) if
/// unset or invalid (reported).
fn sampler(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Box<dyn Sampler>> {
    const NAME: &str = "OTEL_TRACES_SAMPLER";
    let name = crate::env::get(lookup, NAME)?.to_ascii_lowercase();
    let ratio = || TraceIdRatio::new(sampler_ratio(lookup));
    Some(match name.as_str() {
        "always_on" => Box::new(AlwaysOn),
        "always_off" => Box::new(AlwaysOff),
        "traceidratio" => Box::new(ratio()),
        "parentbased_always_on" => Box::new(ParentBased::new(AlwaysOn)),
        "parentbased_always_off" => Box::new(ParentBased::new(AlwaysOff)),
        "parentbased_traceidratio" => Box::new(ParentBased::new(ratio())),
        _ => {
            crate::env::warn_invalid(
                NAME,
                &name,
                "not a sampler tracewire has (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)",
                "parentbased_always_on",
            );
            return None;
        }
    })
}

/// Starts spans. Cheap to clone. A tracer from
/// [`TracerProvider::tracer`] keeps its provider's pipeline alive; one from
/// [`global::tracer`](crate::global::tracer) records into whichever provider is
/// installed when each span starts.
#[derive(Clone)]
pub struct Tracer {
    target: Target,
    scope: Str,
}

/// Where a tracer's spans go.
#[derive(Clone)]
enum Target {
    /// Nowhere: [`Tracer::noop`].
    Noop,
    Provider(Arc<Owner>),
    /// The process-wide provider of the moment.
    Global,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target {
            Target::Noop => "noop",
            Target::Provider(_) => "provider",
            Target::Global => "global",
        };
        f.debug_struct("Tracer")
            .field("scope", &self.scope)
            .field("target", &target)
            .finish()
    }
}

/// Where a new span takes its parent from.
#[derive(Debug)]
enum Parent<'a> {
    Current,
    Context(&'a Context),
    /// The parent's context is in the builder's record (as its span context
    /// until the span's own replaces it), which keeps the builder small.
    Remote,
    Root,
}

impl Tracer {
    /// A tracer that records nothing (what [`global::tracer`](crate::global::tracer)
    /// behaves as while no provider is installed). Its spans propagate their parent.
    pub fn noop() -> Tracer {
        Tracer {
            target: Target::Noop,
            scope: Str::from("noop"),
        }
    }

    /// A tracer recording into the process-wide provider of the moment.
    pub(crate) fn global(scope: Str) -> Tracer {
        Tracer {
            target: Target::Global,
            scope,
        }
    }

    /// The instrumentation scope name.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Starts a span whose parent is the current context's span.
    #[inline]
    pub fn start(&self, name: impl Into<Str>) -> Span {
        if let Some(span) = self.unsampled_child_of_current() {
            return span;
        }
        self.span_builder(name).start()
    }

    /// The span a provider whose sampler drops everything starts under the
    /// current context, decided before anything is built: one flag read, the
    /// parent's ids, a new span id. `None` when the general path must decide (no
    /// such sampler, collection stopped, a B3 debug parent).
    #[inline]
    fn unsampled_child_of_current(&self) -> Option<Span> {
        let Target::Provider(owner) = &self.target else {
            return None;
        };
        let provider = owner.inner();
        if !provider.always_drops || !provider.enabled.load(Ordering::Relaxed) {
            return None;
        }
        Context::map_current(
            #[inline(always)]
            |c| {
                let parent = c.span().span_context();
                if parent.is_debug() {
                    return None;
                }
                Some(Span::non_recording(unsampled_child(parent)))
            },
        )
    }

    /// Starts a span whose parent is `ctx`'s span.
    pub fn start_with_context(&self, name: impl Into<Str>, ctx: &Context) -> Span {
        self.span_builder(name).with_parent(ctx).start()
    }

    /// A builder for a span with more options.
    #[inline]
    pub fn span_builder(&self, name: impl Into<Str>) -> SpanBuilder<'_> {
        SpanBuilder {
            tracer: self,
            name: name.into(),
            kind: SpanKind::Internal,
            parent: Parent::Current,
            // Taken from the pool when an attribute is added or the span records.
            record: None,
            explicit_start: false,
        }
    }

    fn build(&self, b: SpanBuilder<'_>) -> Span {
        match &self.target {
            Target::Provider(owner) => self.build_in(owner.live(), b),
            Target::Global => match lifetime::current() {
                Some(pinned) => self.build_in(pinned.live(), b),
                None => Span::non_recording(b.parent_span().0),
            },
            Target::Noop => Span::non_recording(b.parent_span().0),
        }
    }

    fn build_in(&self, live: Live<'_>, b: SpanBuilder<'_>) -> Span {
        let provider = live.inner();
        if !provider.enabled.load(Ordering::Relaxed) {
            return Span::non_recording(b.parent_span().0);
        }
        let (parent, local_root) = b.parent_span();
        let parent_valid = parent.is_valid();
        // A B3 debug parent (with or without ids) forces sampling.
        let debug = parent.is_debug();
        if provider.always_drops && !debug {
            // Fast path: no sampler call, no result to build.
            if let Some(rec) = b.record {
                Record::give(rec);
            }
            return Span::non_recording(unsampled_child(&parent));
        }
        let (trace_id, flags) = if parent_valid {
            (parent.trace_id(), parent.flags())
        } else {
            (TraceId::random(), TraceFlags::RANDOM)
        };
        // A decision that came without ids is shown to the sampler as the parent
        // of what is, by its ids, a new trace.
        let decided_by = parent_valid || parent.is_sampling_only();
        let attributes = b.record.as_ref().map_or(&[][..], |r| &r.data.attributes);
        let mut result = provider.sampler.should_sample(&SamplingParams {
            parent: decided_by.then_some(&parent),
            trace_id,
            name: &b.name,
            kind: b.kind,
            attributes,
            links: b.record.as_ref().map_or(&[][..], |r| &r.data.links),
        });
        if debug {
            result.decision = SamplingDecision::RecordAndSample;
        }
        let state = match result.trace_state.take() {
            Some(s) => s,
            None if parent_valid => parent.trace_state().clone(),
            None => TraceState::NONE,
        };
        let span_id = SpanId::random();
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        let mut span_context =
            SpanContext::new(trace_id, span_id, flags.with_sampled(sampled), false, state);
        if debug {
            span_context = span_context.with_sampling_state(SamplingState::Debug);
        }
        if result.decision == SamplingDecision::Drop {
            if let Some(rec) = b.record {
                Record::give(rec);
            }
            return Span::non_recording(span_context);
        }
        let mut rec = b.record.unwrap_or_else(Record::take);
        // Observers are shown the start time now; otherwise it stays a counter
        // reading until the export thread converts it.
        let start_time = if b.explicit_start {
            Some(rec.data.start_time)
        } else if sampled && !provider.observers.is_empty() {
            Some(SystemTime::now())
        } else {
            None
        };
        rec.set_start(start_time);
        if !sampled {
            provider.record_only.add(1);
        }
        // Counted open (as started, if sampled) from here until the span drops.
        let provider_ref = live.open_span();
        let parent_span_id = if parent_valid {
            parent.span_id()
        } else {
            SpanId::INVALID
        };
        if sampled {
            for o in provider.observers.iter() {
                o.on_start(&SpanStart {
                    span_context: &span_context,
                    parent_span_id,
                    name: &b.name,
                    kind: b.kind,
                    start_time: rec.data.start_time,
                });
            }
        }
        let limits = &provider.limits;
        let d = &mut rec.data;
        d.attributes.append(&mut result.attributes);
        d.dropped_attributes_count = limit_attributes(
            &mut d.attributes,
            limits.max_attributes_per_span,
            limits.max_attribute_value_length,
        );
        d.span_context = span_context.clone();
        d.parent_span_id = parent_span_id;
        d.parent_is_remote = parent_valid && parent.is_remote();
        d.name = b.name;
        d.kind = b.kind;
        d.scope = self.scope.clone();
        rec.limit_links(limits);
        Span::recording(span_context, local_root, provider_ref, rec)
    }
}

/// The context of a span the sampler drops under `parent` (invalid: a new
/// trace): the parent's trace id, flags and state, a new span id, not sampled.
#[inline(always)]
fn unsampled_child(parent: &SpanContext) -> SpanContext {
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            SpanId::random(),
            parent.flags().with_sampled(false),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            TraceId::random(),
            SpanId::random(),
            TraceFlags::RANDOM.with_sampled(false),
            false,
            TraceState::NONE,
        )
    }
}

/// Configures a span before starting it. Made by [`Tracer::span_builder`].
#[derive(Debug)]
#[must_use = "a span builder does nothing until `start` is called"]
pub struct SpanBuilder<'t> {
    tracer: &'t Tracer,
    name: Str,
    kind: SpanKind,
    parent: Parent<'t>,
    /// The span's record, taken when the first attribute, link, remote parent
    /// or start time is set: they are written into it in place.
    record: Option<Box<Record>>,
    /// The record's start time was set with `with_start_time`.
    explicit_start: bool,
}

impl<'t> SpanBuilder<'t> {
    /// The parent span context this builder says to use, and the parent's local
    /// root.
    fn parent_span(&self) -> (SpanContext, Option<SpanId>) {
        let of_span = |s: &Span| (s.span_context().clone(), s.local_root_span_id());
        match &self.parent {
            Parent::Current => Context::map_current(|c| of_span(c.span())),
            Parent::Context(ctx) => of_span(ctx.span()),
            Parent::Remote => (
                self.record
                    .as_ref()
                    .map_or(SpanContext::INVALID, |r| r.data.span_context.clone()),
                None,
            ),
            Parent::Root => (SpanContext::INVALID, None),
        }
    }

    /// The span kind (default internal).
    pub fn with_kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }
    /// Takes the parent from `ctx` instead of the current context.
    pub fn with_parent(mut self, ctx: &'t Context) -> Self {
        self.parent = Parent::Context(ctx);
        self
    }
    /// Uses `parent` (e.g. extracted from headers) as the parent.
    pub fn with_parent_span_context(mut self, parent: SpanContext) -> Self {
        self.record().data.span_context = parent;
        self.parent = Parent::Remote;
        self
    }
    /// Starts a new trace, ignoring the current context.
    pub fn root(mut self) -> Self {
        self.parent = Parent::Root;
        self
    }
    /// Adds an attribute (visible to the sampler).
    pub fn with_attribute(mut self, kv: KeyValue) -> Self {
        self.record().data.attributes.push(kv);
        self
    }
    /// Adds attributes (visible to the sampler).
    pub fn with_attributes(mut self, kvs: impl IntoIterator<Item = KeyValue>) -> Self {
        self.record().data.attributes.extend(kvs);
        self
    }
    /// The span's record, taken from the pool on first use.
    #[inline]
    fn record(&mut self) -> &mut Record {
        self.record.get_or_insert_with(Record::take)
    }
    /// Adds a link.
    pub fn with_link(mut self, link: Link) -> Self {
        self.record().data.links.push(link);
        self
    }
    /// Sets an explicit start time.
    pub fn with_start_time(mut self, t: SystemTime) -> Self {
        self.record().data.start_time = t;
        self.explicit_start = true;
        self
    }
    /// Starts the span.
    pub fn start(self) -> Span {
        self.tracer.build(self)
    }
}
