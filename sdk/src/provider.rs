//! The tracer provider: the pipeline a binary configures (sampler, limits,
//! observers, processors and exporters) and the tracers made from it.
//!
//! It sits above [`trace`](crate::trace), which starts and ends spans, and
//! [`export`](crate::export), which delivers them: it builds both and joins them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::export::{
    shutdown_all, BatchConfig, BatchProcessor, ExportError, ShutdownError, ShutdownReport,
    SimpleProcessor, SpanExporter, SpanProcessor, Stats,
};
use crate::trace::lifetime::{Owner, Pinned};
use crate::trace::pipeline::{Flush, Output, Pipeline};
use crate::trace::record::Record;
use crate::trace::{
    AlwaysOff, AlwaysOn, KeyValue, ParentBased, Resource, Sampler, SpanLimits, SpanObserver, Str,
    TraceIdRatio, Tracer,
};

/// What a provider's spans go to when they end: its processors.
#[derive(Debug)]
struct Processors {
    all: Box<[Arc<dyn SpanProcessor>]>,
    /// The one processor when it is a batch processor: ended spans' records go
    /// to it as they are, their times converted by its export thread.
    batch_only: Option<Arc<BatchProcessor>>,
    resource: Resource,
}

impl Output for Processors {
    #[inline]
    fn on_end(&self, mut rec: Box<Record>) {
        if let Some(batch) = &self.batch_only {
            batch.push_record(rec);
            return;
        }
        let data = rec.take_data();
        Record::give(rec);
        if let Some((last, rest)) = self.all.split_last() {
            for p in rest {
                p.on_end(data.clone());
            }
            last.on_end(data);
        }
    }

    fn flush(&self, timeout: Duration) -> Flush<'_> {
        Box::pin(async move {
            let deadline = std::time::Instant::now() + timeout;
            // All started at once, so they run side by side under one deadline.
            let handles: Vec<_> = self
                .all
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
        })
    }

    /// Shuts down (flushing for up to 5 seconds) unless that was done.
    fn on_last_handle(&self, pipeline: &Pipeline) {
        if !pipeline.is_shut_down() {
            let _ = self.shutdown(pipeline, Duration::from_secs(5));
        }
    }
}

impl Processors {
    fn shutdown(
        &self,
        pipeline: &Pipeline,
        timeout: Duration,
    ) -> Result<ShutdownReport, ShutdownError> {
        if !pipeline.begin_shutdown() {
            let s = self.stats(pipeline);
            return Err(ShutdownError::new(
                ShutdownReport::new(s.exported, s.dropped),
                Some(ExportError::shut_down()),
            ));
        }
        shutdown_all(&self.all, timeout)
    }

    fn stats(&self, pipeline: &Pipeline) -> Stats {
        let (started, ended) = pipeline.span_counts();
        let mut stats = Stats {
            started,
            ended,
            ..Stats::default()
        };
        for p in self.all.iter() {
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
    processors: Arc<Processors>,
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
        Tracer::of(Arc::clone(&self.owner), scope.into())
    }

    fn pipeline(&self) -> &Pipeline {
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
        self.processors.stats(self.pipeline())
    }

    /// Stops or resumes collection at runtime. While stopped, new spans are
    /// non-recording (they still propagate their parent) and cost one atomic load.
    /// A provider built with `OTEL_SDK_DISABLED=true` stays stopped.
    pub fn set_enabled(&self, enabled: bool) {
        self.pipeline().set_enabled(enabled);
    }

    /// Whether collection is running.
    pub fn is_enabled(&self) -> bool {
        self.pipeline().is_enabled()
    }

    /// Exports every span ended before this call, waiting at most `timeout`. An
    /// error when an export since the previous flush failed: spans were lost.
    pub fn force_flush(&self, timeout: Duration) -> Result<(), ExportError> {
        let mut result = Ok(());
        for p in self.processors.all.iter() {
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
        self.processors.shutdown(self.pipeline(), timeout)
    }

    /// The provider's resource.
    pub fn resource(&self) -> &Resource {
        &self.processors.resource
    }
}

impl fmt::Debug for TracerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracerProvider")
            .field("resource", &self.processors.resource)
            .field("pipeline", self.pipeline())
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
        for p in &processors {
            p.set_resource(&resource);
        }
        let processors = Arc::new(Processors {
            all: processors.into_boxed_slice(),
            batch_only,
            resource,
        });
        let pipeline = Pipeline::new(
            sampler.unwrap_or_else(|| Box::new(ParentBased::new(AlwaysOn))),
            self.limits,
            if disabled {
                Box::default()
            } else {
                self.observers.into_boxed_slice()
            },
            disabled,
            Arc::clone(&processors) as Arc<dyn Output>,
        );
        TracerProvider {
            owner: Arc::new(Owner::new(pipeline)),
            processors,
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
