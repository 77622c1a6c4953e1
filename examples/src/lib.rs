//! What the example programs share: the `helloworld.Greeter` gRPC types, the
//! command-line flags every example reads (`--addr` and the exporter flags), and
//! [`install_pipeline`], which turns the exporter flags into a global
//! [`TracerProvider`].
//!
//! Exporter flags:
//!
//! | flag | spans go to |
//! |---|---|
//! | `--zipkin URL` | a Zipkin v2 collector, e.g. `http://127.0.0.1:9411/api/v2/spans` |
//! | `--stackdriver-project P` | Google Cloud Trace, project `P`, with Application Default Credentials |
//! | `--stackdriver-project P --stackdriver-endpoint URL` | a Cloud Trace stand-in at `URL` (emulator, test server), no credentials |
//!
//! Both `--flag VALUE` and `--flag=VALUE` are accepted.
//!
//! Continuous profiling flags ([`ProfilingFlags`], read by `http-labels` and
//! `demo`):
//!
//! | flag | profiles go to |
//! |---|---|
//! | `--pyroscope URL` | Grafana Pyroscope at `URL` (e.g. `http://127.0.0.1:4040`): CPU and heap every period ([`tracewire_pyroscope`]) |
//! | `--cloud-profiler-project P` | Google Cloud Profiler, project `P`, with Application Default Credentials ([`tracewire_cloud_profiler`]) |
//! | `--cloud-profiler-project P --cloud-profiler-endpoint URL` | a Cloud Profiler stand-in at `URL`, no credentials |
//! | `--upload-every SECONDS` | the Pyroscope period (default 15; Cloud Profiler's server sets its own pace) |
//!
//! The OpenTelemetry variables configure the examples too (see the README's
//! configuration table): [`install_pipeline`] reads them with
//! [`TracerProviderBuilder::from_env`]. Where a flag and a variable say the same
//! thing, the flag wins: exporter flags replace `OTEL_TRACES_EXPORTER`, and
//! `--zipkin URL` replaces `OTEL_EXPORTER_ZIPKIN_ENDPOINT`. Without either, each
//! example keeps its own default (JSON lines on standard output, or no export).
//!
//! | `OTEL_TRACES_EXPORTER` | spans go to |
//! |---|---|
//! | `zipkin` | Zipkin, at `OTEL_EXPORTER_ZIPKIN_ENDPOINT` (default `http://localhost:9411/api/v2/spans`) |
//! | `console` | JSON lines on standard output |
//! | `none` | nowhere |
//! | `otlp` | OTLP ([`tracewire_otlp`]), configured by `OTEL_EXPORTER_OTLP_*` and `OTEL_EXPORTER_OTLP_TRACES_*` (default OTLP/HTTP to `http://localhost:4318/v1/traces`) |

#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

use std::fmt;
use std::net::SocketAddr;

use tracewire::env::TracesExporter;
use tracewire::export::{JsonLinesExporter, SpanExporter};
use tracewire::trace::Str;
use tracewire::TracerProvider;
use tracewire::TracerProviderBuilder;

pub mod helloworld {
    //! The standard gRPC `helloworld.Greeter` service (`SayHello`), generated from
    //! `proto/helloworld.proto` at build time.
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("helloworld");
}

/// If `arg` is `--name` or `--name=VALUE`, its value (taken from `rest` in the
/// first form); `None` if `arg` is another flag.
pub fn flag_value<I>(arg: &str, name: &str, rest: &mut I) -> Result<Option<String>, String>
where
    I: Iterator<Item = String> + ?Sized,
{
    match arg.strip_prefix(name) {
        Some("") => rest
            .next()
            .map(Some)
            .ok_or_else(|| format!("{name} needs a value")),
        Some(tail) => Ok(tail.strip_prefix('=').map(str::to_owned)),
        None => Ok(None),
    }
}

/// Parses a `HOST:PORT` socket address given to `--addr`.
pub fn parse_socket_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse()
        .map_err(|e| format!("bad --addr {addr:?}: {e}"))
}

/// Parses arguments that may only be `--addr HOST:PORT` (default `default`).
pub fn parse_addr(
    args: impl IntoIterator<Item = String>,
    default: &str,
) -> Result<SocketAddr, String> {
    let flags = Flags::parse_with(args, default, |_, _| Ok(false), false)?;
    parse_socket_addr(&flags.addr)
}

/// Where spans go: the exporter flags (see the [crate docs](crate)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineFlags {
    /// `--zipkin URL`: a Zipkin v2 collector endpoint.
    pub zipkin: Option<String>,
    /// `--stackdriver-project P`: export to Google Cloud Trace in project `P`.
    pub stackdriver_project: Option<String>,
    /// `--stackdriver-endpoint URL`: a Cloud Trace stand-in, without credentials.
    pub stackdriver_endpoint: Option<String>,
}

impl PipelineFlags {
    /// Consumes `arg` (and its value from `rest`) if it is an exporter flag;
    /// `Ok(false)` if it is not one.
    pub fn parse_one<I>(&mut self, arg: &str, rest: &mut I) -> Result<bool, String>
    where
        I: Iterator<Item = String> + ?Sized,
    {
        if let Some(url) = flag_value(arg, "--zipkin", rest)? {
            self.zipkin = Some(url);
        } else if let Some(project) = flag_value(arg, "--stackdriver-project", rest)? {
            self.stackdriver_project = Some(project);
        } else if let Some(url) = flag_value(arg, "--stackdriver-endpoint", rest)? {
            self.stackdriver_endpoint = Some(url);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// How many exporters the flags ask for (0, 1 or 2).
    pub fn exporter_count(&self) -> usize {
        usize::from(self.zipkin.is_some()) + usize::from(self.stackdriver_project.is_some())
    }

    /// Adds a batch exporter for each exporter flag given (none if there is none).
    /// Fails on a URL an exporter rejects, or on `--stackdriver-endpoint` without
    /// `--stackdriver-project`.
    pub fn add_exporters(
        &self,
        builder: TracerProviderBuilder,
    ) -> Result<TracerProviderBuilder, String> {
        self.add_flag_exporters(builder, &tracewire::env::system, &mut Vec::new())
    }

    /// Adds the exporters the flags name or, without exporter flags, those
    /// `OTEL_TRACES_EXPORTER` (read with `lookup`) names. The second value
    /// describes each exporter added (`None` if neither the flags nor the
    /// variable chose: the caller then adds its default exporter).
    pub fn add_exporters_or_env(
        &self,
        builder: TracerProviderBuilder,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(TracerProviderBuilder, Option<Vec<String>>), String> {
        let mut added = Vec::new();
        let builder = if self.exporter_count() > 0 {
            self.add_flag_exporters(builder, lookup, &mut added)?
        } else {
            match tracewire::env::traces_exporters_with(lookup) {
                Some(exporters) => add_env_exporters(builder, &exporters, lookup, &mut added)?,
                None => return Ok((builder, None)),
            }
        };
        Ok((builder, Some(added)))
    }

    fn add_flag_exporters(
        &self,
        mut builder: TracerProviderBuilder,
        lookup: &dyn Fn(&str) -> Option<String>,
        added: &mut Vec<String>,
    ) -> Result<TracerProviderBuilder, String> {
        if let Some(url) = &self.zipkin {
            // The flag's URL wins; OTEL_EXPORTER_ZIPKIN_TIMEOUT still applies.
            let exporter = tracewire_zipkin::ZipkinExporter::builder()
                .from_env_with(lookup)
                .with_endpoint(url.clone())
                .build()
                .map_err(|e| format!("--zipkin: {e}"))?;
            builder = add_batch(builder, exporter, added);
        }
        match (&self.stackdriver_project, &self.stackdriver_endpoint) {
            (Some(project), endpoint) => {
                let mut exporter =
                    tracewire_stackdriver::StackdriverExporter::builder().with_project_id(project);
                if let Some(url) = endpoint {
                    // An emulator or test server: no credentials are sent.
                    exporter = exporter.with_endpoint(url.clone());
                }
                let exporter = exporter
                    .build()
                    .map_err(|e| format!("--stackdriver-project: {e}"))?;
                builder = add_batch(builder, exporter, added);
            }
            (None, Some(_)) => {
                return Err("--stackdriver-endpoint needs --stackdriver-project".to_owned())
            }
            (None, None) => {}
        }
        Ok(builder)
    }
}

/// Where continuous profiles go: the profiling flags (see the [crate docs](crate)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfilingFlags {
    /// `--pyroscope URL`: a Grafana Pyroscope server.
    pub pyroscope: Option<String>,
    /// `--cloud-profiler-project P`: Google Cloud Profiler in project `P`.
    pub cloud_profiler_project: Option<String>,
    /// `--cloud-profiler-endpoint URL`: a Cloud Profiler stand-in, no credentials.
    pub cloud_profiler_endpoint: Option<String>,
    /// `--upload-every SECONDS`: the Pyroscope period.
    pub upload_every: Option<std::time::Duration>,
}

impl ProfilingFlags {
    /// Consumes `arg` (and its value from `rest`) if it is a profiling flag;
    /// `Ok(false)` if it is not one.
    pub fn parse_one<I>(&mut self, arg: &str, rest: &mut I) -> Result<bool, String>
    where
        I: Iterator<Item = String> + ?Sized,
    {
        if let Some(url) = flag_value(arg, "--pyroscope", rest)? {
            self.pyroscope = Some(url);
        } else if let Some(p) = flag_value(arg, "--cloud-profiler-project", rest)? {
            self.cloud_profiler_project = Some(p);
        } else if let Some(url) = flag_value(arg, "--cloud-profiler-endpoint", rest)? {
            self.cloud_profiler_endpoint = Some(url);
        } else if let Some(s) = flag_value(arg, "--upload-every", rest)? {
            let seconds = s
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    format!("--upload-every needs a positive number of seconds, got {s:?}")
                })?;
            self.upload_every = Some(std::time::Duration::from_secs_f64(seconds));
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Starts the uploaders the flags ask for (none without flags), naming the
    /// service `service`. Fails on a configuration an uploader rejects, or on
    /// `--cloud-profiler-endpoint` without `--cloud-profiler-project`.
    pub fn start(&self, service: &str) -> Result<Uploaders, String> {
        let mut uploaders = Uploaders::default();
        if let Some(url) = &self.pyroscope {
            let mut builder = tracewire_pyroscope::PyroscopeUploader::builder(url.clone())
                .with_service_name(service);
            if let Some(period) = self.upload_every {
                builder = builder.with_upload_every(period);
            }
            uploaders.pyroscope = Some(builder.start().map_err(|e| format!("--pyroscope: {e}"))?);
        }
        match (&self.cloud_profiler_project, &self.cloud_profiler_endpoint) {
            (Some(project), endpoint) => {
                let mut builder = tracewire_cloud_profiler::CloudProfilerAgent::builder()
                    .with_project_id(project)
                    .with_service(service);
                if let Some(url) = endpoint {
                    builder = builder.with_endpoint(url.clone());
                }
                uploaders.cloud_profiler = Some(
                    builder
                        .start()
                        .map_err(|e| format!("--cloud-profiler-project: {e}"))?,
                );
            }
            (None, Some(_)) => {
                return Err("--cloud-profiler-endpoint needs --cloud-profiler-project".to_owned())
            }
            (None, None) => {}
        }
        Ok(uploaders)
    }
}

/// The continuous-profiling uploaders [`ProfilingFlags::start`] started.
#[derive(Debug, Default)]
pub struct Uploaders {
    /// To Pyroscope, with `--pyroscope`.
    pub pyroscope: Option<tracewire_pyroscope::PyroscopeUploader>,
    /// To Cloud Profiler, with `--cloud-profiler-project`.
    pub cloud_profiler: Option<tracewire_cloud_profiler::CloudProfilerAgent>,
}

impl Uploaders {
    /// One line per uploader, saying where profiles go.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.pyroscope {
            out.push(format!("CPU and heap profiles to Pyroscope at {}", p.url()));
        }
        if let Some(c) = &self.cloud_profiler {
            let d = c.deployment();
            out.push(format!(
                "profiles to Cloud Profiler (project {}, target {})",
                d.project_id, d.target
            ));
        }
        out
    }

    /// Shuts both down, uploading what they hold within `timeout` each, and
    /// reports on standard error what they did.
    pub fn shutdown(&self, name: &str, timeout: std::time::Duration) {
        if let Some(p) = &self.pyroscope {
            if let Err(e) = p.shutdown(timeout) {
                eprintln!("{name}: Pyroscope: {e}");
            }
            eprintln!("{name}: Pyroscope uploader: {:?}", p.stats());
        }
        if let Some(c) = &self.cloud_profiler {
            if let Err(e) = c.shutdown(timeout) {
                eprintln!("{name}: Cloud Profiler: {e}");
            }
            eprintln!("{name}: Cloud Profiler agent: {:?}", c.stats());
        }
    }
}

/// The flags of a server or client example: `--addr` plus the exporter flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--addr`, as given (a `HOST:PORT` for servers, a URL for clients).
    pub addr: String,
    /// The exporter flags.
    pub pipeline: PipelineFlags,
}

impl Flags {
    /// Parses `--addr` (default `default_addr`) and the exporter flags; anything
    /// else is an error.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        default_addr: &str,
    ) -> Result<Flags, String> {
        Self::parse_with(args, default_addr, |_, _| Ok(false), true)
    }

    /// Like [`parse`](Self::parse), handing every other argument to `extra`, which
    /// returns whether it took it (reading its value from the iterator).
    pub fn parse_with_extra<F>(
        args: impl IntoIterator<Item = String>,
        default_addr: &str,
        extra: F,
    ) -> Result<Flags, String>
    where
        F: FnMut(&str, &mut dyn Iterator<Item = String>) -> Result<bool, String>,
    {
        Self::parse_with(args, default_addr, extra, true)
    }

    fn parse_with<F>(
        args: impl IntoIterator<Item = String>,
        default_addr: &str,
        mut extra: F,
        exporters: bool,
    ) -> Result<Flags, String>
    where
        F: FnMut(&str, &mut dyn Iterator<Item = String>) -> Result<bool, String>,
    {
        let mut flags = Flags {
            addr: default_addr.to_owned(),
            pipeline: PipelineFlags::default(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if let Some(addr) = flag_value(&arg, "--addr", &mut args)? {
                flags.addr = addr;
                continue;
            }
            let taken = (exporters && flags.pipeline.parse_one(&arg, &mut args)?)
                || extra(&arg, &mut args)?;
            if !taken {
                return Err(format!("unknown argument {arg:?}"));
            }
        }
        Ok(flags)
    }

    /// `--addr` as a socket address.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        parse_socket_addr(&self.addr)
    }
}

/// Adds `exporter` behind a batch processor, describing it in `added`.
fn add_batch<E: SpanExporter + fmt::Debug>(
    builder: TracerProviderBuilder,
    exporter: E,
    added: &mut Vec<String>,
) -> TracerProviderBuilder {
    added.push(format!("{exporter:?}"));
    builder.with_batch_exporter(exporter)
}

/// Adds the exporters `OTEL_TRACES_EXPORTER` named, in its order, describing
/// each in `added`.
fn add_env_exporters(
    mut builder: TracerProviderBuilder,
    exporters: &[TracesExporter],
    lookup: &dyn Fn(&str) -> Option<String>,
    added: &mut Vec<String>,
) -> Result<TracerProviderBuilder, String> {
    for exporter in exporters {
        builder = match exporter {
            TracesExporter::Zipkin => {
                let zipkin = tracewire_zipkin::ZipkinExporter::builder()
                    .from_env_with(lookup)
                    .build()
                    .map_err(|e| format!("OTEL_TRACES_EXPORTER=zipkin: {e}"))?;
                add_batch(builder, zipkin, added)
            }
            TracesExporter::Console => {
                let console = JsonLinesExporter::stdout();
                added.push(format!("{console:?} on standard output"));
                builder.with_batch_exporter(console)
            }
            TracesExporter::Otlp => {
                let otlp = tracewire_otlp::OtlpExporter::builder()
                    .from_env_with(lookup)
                    .build()
                    .map_err(|e| format!("OTEL_TRACES_EXPORTER=otlp: {e}"))?;
                add_batch(builder, otlp, added)
            }
            other => {
                eprintln!("tracewire: OTEL_TRACES_EXPORTER: {other:?} is not available here");
                builder
            }
        };
    }
    Ok(builder)
}

/// The provider [`install_pipeline`] installs, reading the variables with
/// `lookup`: the OpenTelemetry SDK variables
/// ([`TracerProviderBuilder::from_env_with`]), `service_name` unless
/// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names
/// the service, and the exporters the flags choose or, without exporter flags,
/// `OTEL_TRACES_EXPORTER`; without either, JSON lines on standard output. The
/// second value describes each exporter added.
pub fn pipeline_with(
    service_name: impl Into<Str>,
    flags: &PipelineFlags,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(TracerProviderBuilder, Vec<String>), String> {
    let builder = TracerProvider::builder()
        .with_fallback_service_name(service_name)
        .from_env_with(lookup);
    Ok(match flags.add_exporters_or_env(builder, lookup)? {
        (builder, Some(added)) => (builder, added),
        (builder, None) => {
            let console = JsonLinesExporter::stdout();
            let added = vec![format!("{console:?} on standard output")];
            (builder.with_batch_exporter(console), added)
        }
    })
}

/// Builds a provider configured by the environment and `flags` (see
/// [`pipeline_with`]; `service_name` is the name used unless `OTEL_SERVICE_NAME`
/// gives one), and installs it as the global provider with
/// [`tracewire::global::set_tracer_provider`]. Binaries call
/// [`tracewire::global::shutdown_tracer_provider`] before exiting to export what
/// is still queued.
pub fn install_pipeline(
    service_name: impl Into<Str>,
    flags: &PipelineFlags,
) -> Result<TracerProvider, String> {
    let (builder, _) = pipeline_with(service_name, flags, &tracewire::env::system)?;
    let provider = builder.build();
    tracewire::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// A tokio runtime with 2 worker threads for example `name`; if it cannot start,
/// the process exits with a message (status 1).
pub fn runtime_or_exit(name: &str) -> tokio::runtime::Runtime {
    or_exit(
        name,
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    )
}

/// A tokio runtime with 2 worker threads registered with the CPU profiler, so
/// their samples have full stacks (the blocking pool's threads run these hooks
/// too).
pub fn profiled_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| {
            let _ = tracewire::profile::register_current_thread();
        })
        .on_thread_stop(tracewire::profile::unregister_current_thread)
        .build()
}

/// [`profiled_runtime`] for example `name`; if it cannot start, the process
/// exits with a message (status 1).
pub fn profiled_runtime_or_exit(name: &str) -> tokio::runtime::Runtime {
    or_exit(name, profiled_runtime())
}

fn or_exit(
    name: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
) -> tokio::runtime::Runtime {
    runtime.unwrap_or_else(|e| {
        eprintln!("{name}: cannot start the tokio runtime: {e}");
        std::process::exit(1);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_take_values_after_a_space_or_an_equals_sign() {
        let flags = Flags::parse(
            args("--addr=127.0.0.1:1 --zipkin http://z/api/v2/spans --stackdriver-project=p"),
            "127.0.0.1:8080",
        )
        .unwrap();
        assert_eq!(flags.addr, "127.0.0.1:1");
        assert_eq!(
            flags.pipeline.zipkin.as_deref(),
            Some("http://z/api/v2/spans")
        );
        assert_eq!(flags.pipeline.stackdriver_project.as_deref(), Some("p"));
        assert_eq!(flags.pipeline.exporter_count(), 2);
    }

    #[test]
    fn profiling_flags_are_taken_by_the_examples_that_ask_for_them() {
        let mut profiling = ProfilingFlags::default();
        let flags = Flags::parse_with_extra(
            args("--pyroscope http://p:4040 --cloud-profiler-project=proj --upload-every 2.5 --zipkin http://z"),
            "a",
            |arg, rest| profiling.parse_one(arg, rest),
        )
        .unwrap();
        assert_eq!(flags.pipeline.zipkin.as_deref(), Some("http://z"));
        assert_eq!(profiling.pyroscope.as_deref(), Some("http://p:4040"));
        assert_eq!(profiling.cloud_profiler_project.as_deref(), Some("proj"));
        assert_eq!(
            profiling.upload_every,
            Some(std::time::Duration::from_millis(2500))
        );
        for bad in ["--upload-every 0", "--upload-every x", "--upload-every"] {
            let mut p = ProfilingFlags::default();
            let r = Flags::parse_with_extra(args(bad), "a", |arg, rest| p.parse_one(arg, rest));
            assert!(r.is_err(), "{bad}");
        }
        // Other examples do not take them.
        assert!(Flags::parse(args("--pyroscope http://p"), "a").is_err());
        let endpoint_alone = ProfilingFlags {
            cloud_profiler_endpoint: Some("http://127.0.0.1:1".into()),
            ..ProfilingFlags::default()
        };
        assert!(endpoint_alone.start("svc").is_err());
        assert!(ProfilingFlags::default()
            .start("svc")
            .unwrap()
            .describe()
            .is_empty());
    }

    #[test]
    fn missing_values_and_unknown_flags_are_errors() {
        assert!(Flags::parse(args("--zipkin"), "a").is_err());
        assert!(Flags::parse(args("--zip http://z"), "a").is_err());
        assert!(Flags::parse(args("--addrx 1"), "a").is_err());
        assert!(parse_addr(args("--zipkin http://z"), "127.0.0.1:1").is_err());
        assert!(parse_addr(args("--addr nope"), "127.0.0.1:1").is_err());
    }

    #[test]
    fn extra_flags_are_handed_to_the_caller() {
        let mut name = None;
        let flags = Flags::parse_with_extra(args("--name bob --addr x"), "d", |arg, rest| {
            Ok(match flag_value(arg, "--name", rest)? {
                Some(v) => {
                    name = Some(v);
                    true
                }
                None => false,
            })
        })
        .unwrap();
        assert_eq!((flags.addr.as_str(), name.as_deref()), ("x", Some("bob")));
    }

    use tracewire::env::lookup_in as env;

    /// What `pipeline_with` builds for service "example": the provider's debug
    /// form (with its service name) and the exporters added, one a line.
    fn pipeline(flags: &str, vars: &[(&'static str, &'static str)]) -> String {
        let flags = Flags::parse(args(flags), "a").unwrap().pipeline;
        let (builder, added) = pipeline_with("example", &flags, &env(vars)).unwrap();
        let provider = builder.build();
        let debug = format!("{provider:?}\n{}", added.join("\n"));
        provider
            .shutdown(std::time::Duration::from_secs(1))
            .unwrap();
        debug
    }

    #[test]
    fn the_service_name_comes_from_the_environment_before_the_example_name() {
        assert!(pipeline("", &[]).contains(r#"service_name: "example""#));
        let named = pipeline("", &[("OTEL_SERVICE_NAME", "from-env")]);
        assert!(named.contains(r#"service_name: "from-env""#), "{named}");
    }

    #[test]
    fn otel_traces_exporter_chooses_the_exporters_without_exporter_flags() {
        let zipkin = [
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://127.0.0.1:1/env"),
        ];
        let p = pipeline("", &zipkin);
        assert!(
            p.contains("127.0.0.1:1/env") && !p.contains("JsonLines"),
            "{p}"
        );
        let p = pipeline("", &[("OTEL_TRACES_EXPORTER", "console,zipkin")]);
        assert!(
            p.contains("JsonLines") && p.contains("localhost:9411"),
            "{p}"
        );
        assert!(!pipeline("", &[("OTEL_TRACES_EXPORTER", "none")]).contains("Exporter"));
        let p = pipeline("", &[("OTEL_TRACES_EXPORTER", "otlp")]);
        assert!(
            p.contains("OtlpExporter") && p.contains("localhost:4318/v1/traces"),
            "{p}"
        );
        // Unset or unknown: the example's default, JSON lines.
        assert!(pipeline("", &[]).contains("JsonLines"));
        assert!(pipeline("", &[("OTEL_TRACES_EXPORTER", "jaeger")]).contains("JsonLines"));
    }

    #[test]
    fn exporter_flags_win_over_otel_traces_exporter_and_the_zipkin_endpoint() {
        let p = pipeline(
            "--zipkin http://127.0.0.1:2/flag",
            &[
                ("OTEL_TRACES_EXPORTER", "console"),
                ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://127.0.0.1:1/env"),
            ],
        );
        assert!(p.contains("127.0.0.1:2/flag"), "{p}");
        assert!(!p.contains("/env") && !p.contains("JsonLines"), "{p}");
    }

    #[test]
    fn otel_traces_exporter_otlp_is_configured_by_the_otlp_variables() {
        let p = pipeline(
            "",
            &[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret"),
            ],
        );
        assert!(p.contains("protocol: Grpc"), "{p}");
        assert!(p.contains(r#"endpoint: "http://127.0.0.1:1""#), "{p}");
        assert!(p.contains("compression: Gzip"), "{p}");
        assert!(p.contains("api-key") && !p.contains("secret"), "{p}");
        assert!(!p.contains("JsonLines"), "{p}");
    }

    #[test]
    fn an_invalid_zipkin_endpoint_from_the_environment_is_an_error() {
        let flags = PipelineFlags::default();
        let vars = env(&[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "ftp://zipkin/api/v2/spans"),
        ]);
        let err = pipeline_with("example", &flags, &vars).unwrap_err();
        assert!(err.contains("OTEL_TRACES_EXPORTER=zipkin"), "{err}");
    }

    #[test]
    fn a_stackdriver_endpoint_needs_a_project() {
        let flags = PipelineFlags {
            stackdriver_endpoint: Some("http://127.0.0.1:1".into()),
            ..PipelineFlags::default()
        };
        assert!(flags.add_exporters(TracerProvider::builder()).is_err());
    }
}
