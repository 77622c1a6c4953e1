//! The agent's thread: the `CreateProfile` loop that collects what the server
//! asks for, and the `UpdateProfile` loop that uploads it from a bounded queue.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{watch, Notify};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tracewire::alloc::{HeapProfile, SampleType};
use tracewire::export::{Attempt, ExportCounters, ExportError, FailureLog};
use tracewire::profile::{Profiler, SpanIds};

use crate::proto::v2::profiler_service_client::ProfilerServiceClient;
use crate::proto::v2::{
    CreateProfileRequest, Deployment, Profile, ProfileType, UpdateProfileRequest,
};
use crate::{CloudProfilerAgent, CloudProfilerBuilder, Error, Stats, DEFAULT_ENDPOINT};

/// The CPU profile's length when the server gives none (the agents' default).
const DEFAULT_CPU_DURATION: Duration = Duration::from_secs(10);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Shared {
    queue: Mutex<VecDeque<Profile>>,
    capacity: usize,
    /// Something was queued.
    wake: Notify,
    /// Set by `shutdown`: the deadline.
    stop: watch::Sender<Option<Instant>>,
    /// exported = uploaded, dropped, failed = failed uploads, retried.
    counters: ExportCounters,
    asked: AtomicU64,
    collected: AtomicU64,
    aborted: AtomicU64,
    create_errors: AtomicU64,
    busy: AtomicU64,
    collect_errors: AtomicU64,
    /// Standard error lines about failures, at most one a minute.
    log: Mutex<FailureLog>,
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        let c = self.counters.snapshot();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            asked: n(&self.asked),
            collected: n(&self.collected),
            uploaded: c.exported,
            dropped: c.dropped,
            failed_uploads: c.failed,
            retries: c.retried,
            aborted: n(&self.aborted),
            create_errors: n(&self.create_errors),
            busy: n(&self.busy),
            collect_errors: n(&self.collect_errors),
            queued: lock(&self.queue).len() as u64,
        }
    }

    pub(crate) fn stop(&self, deadline: Instant) {
        self.stop.send_replace(Some(deadline));
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Queues `profile`, dropping the oldest if the queue is full.
    fn push(&self, profile: Profile) {
        self.collected.fetch_add(1, Ordering::Relaxed);
        let mut q = lock(&self.queue);
        while q.len() >= self.capacity {
            q.pop_front();
            self.counters.add_dropped(1);
        }
        q.push_back(profile);
        drop(q);
        self.wake.notify_one();
    }

    fn count(&self, counter: &AtomicU64, what: &str, err: &dyn fmt::Display) {
        counter.fetch_add(1, Ordering::Relaxed);
        lock(&self.log).report(what, err);
    }
}

/// What the agent's thread works with.
struct Agent {
    shared: Arc<Shared>,
    config: CloudProfilerBuilder,
    deployment: Deployment,
    types: Vec<i32>,
    client: ProfilerServiceClient<Channel>,
    /// `None` for a custom endpoint.
    auth: Option<Auth>,
}

pub(crate) fn start(
    config: CloudProfilerBuilder,
    deployment: Deployment,
) -> Result<CloudProfilerAgent, Error> {
    let mut types = Vec::new();
    if cfg!(target_os = "linux") {
        types.push(ProfileType::Cpu as i32);
    }
    if config.heap && tracewire::alloc::is_installed() {
        types.push(ProfileType::Heap as i32);
    }
    if types.is_empty() {
        return Err(Error::new(
            "no profile type to offer: the CPU profiler is Linux only and the heap profiler is not installed",
        ));
    }
    let (url, auth) = match &config.endpoint {
        None => (DEFAULT_ENDPOINT.to_owned(), Some(Auth::default())),
        Some(url) => (url.clone(), None),
    };
    let endpoint = endpoint(&url, config.timeout)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        capacity: config.queue_capacity,
        wake: Notify::new(),
        stop: watch::Sender::new(None),
        counters: ExportCounters::new(),
        asked: AtomicU64::new(0),
        collected: AtomicU64::new(0),
        aborted: AtomicU64::new(0),
        create_errors: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        collect_errors: AtomicU64::new(0),
        log: Mutex::new(FailureLog::new(
            "tracewire-cloud-profiler",
            Duration::from_secs(60),
        )),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the agent's runtime: {e}")))?;
    let thread_shared = Arc::clone(&shared);
    let agent_deployment = deployment.clone();
    let thread = std::thread::Builder::new()
        .name("tracewire-cloud-profiler".into())
        .spawn(move || {
            runtime.block_on(async move {
                // The channel's background task runs on this runtime.
                let client = ProfilerServiceClient::new(endpoint.connect_lazy());
                let agent = Agent {
                    shared: thread_shared,
                    config,
                    deployment: agent_deployment,
                    types,
                    client,
                    auth,
                };
                agent.run().await;
            });
        })
        .map_err(|e| Error::new(format!("cannot start the agent's thread: {e}")))?;
    Ok(CloudProfilerAgent {
        shared,
        deployment,
        endpoint: url,
        thread: Mutex::new(Some(thread)),
    })
}

fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, Error> {
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .map_err(|e| Error::new(format!("invalid Cloud Profiler endpoint {url:?}: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(Error::new(format!(
                "the Cloud Profiler endpoint must be an http:// or https:// URL, got {url:?}"
            )))
        }
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::new(format!(
            "the Cloud Profiler endpoint {url:?} has no host"
        )));
    }
    let mut endpoint = Endpoint::from(uri);
    if tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| Error::new(format!("TLS setup for {url:?}: {e}")))?;
    }
    endpoint
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        // The long poll may be idle for an hour: find a dead connection sooner.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .user_agent(concat!(
            "tracewire-cloud-profiler/",
            env!("CARGO_PKG_VERSION")
        ))
        .map_err(|e| Error::new(format!("invalid user agent: {e}")))
}

impl Agent {
    /// Creates, collects and uploads until shut down, then uploads what is left
    /// until the deadline.
    async fn run(self) {
        let mut stop = self.shared.stop.subscribe();
        let created = Notify::new();
        let work = async {
            tokio::join!(
                async {
                    self.create_loop().await;
                    created.notify_one();
                },
                self.upload_loop(&created),
            )
        };
        let deadline = async {
            // The sender lives in `shared`: waiting cannot fail.
            let d = stop.wait_for(Option::is_some).await.ok().and_then(|d| *d);
            match d {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = work => {}
            () = deadline => {}
        }
        // The deadline passed: what is still queued is not uploaded.
        let left = std::mem::take(&mut *lock(&self.shared.queue)).len();
        self.shared.counters.add_dropped(left as u64);
    }

    /// Asks for profiles to make until shut down.
    async fn create_loop(&self) {
        let sh = &*self.shared;
        let mut stop = sh.stop.subscribe();
        let mut failures = 0u32;
        while !sh.stopping() {
            let answer = tokio::select! {
                r = self.create_profile() => r,
                _ = stop.wait_for(Option::is_some) => return,
            };
            let wait = match answer {
                Ok(profile) => {
                    failures = 0;
                    sh.asked.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = self.collect(profile).await {
                        sh.push(p);
                    }
                    continue;
                }
                Err(status) => match retry_delay(&status) {
                    Some(delay) if status.code() == Code::Aborted => {
                        sh.aborted.fetch_add(1, Ordering::Relaxed);
                        delay
                    }
                    _ => {
                        sh.count(&sh.create_errors, "CreateProfile failed", &status);
                        let delay = self.config.backoff.delay(failures);
                        failures = failures.saturating_add(1);
                        delay
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(Option::is_some) => return,
            }
        }
    }

    async fn create_profile(&self) -> Result<Profile, Status> {
        let mut request = tonic::Request::new(CreateProfileRequest {
            parent: format!("projects/{}", self.deployment.project_id),
            deployment: Some(self.deployment.clone()),
            profile_type: self.types.clone(),
        });
        request.set_timeout(self.config.create_timeout);
        if let Some(auth) = &self.auth {
            let token = auth.header().await?;
            request.metadata_mut().insert("authorization", token);
        }
        let mut client = self.client.clone();
        client.create_profile(request).await.map(|r| r.into_inner())
    }

    /// Makes the profile the server asked for, with its bytes.
    async fn collect(&self, mut profile: Profile) -> Option<Profile> {
        let sh = &*self.shared;
        let kind = ProfileType::try_from(profile.profile_type).unwrap_or_default();
        let encoded = match kind {
            ProfileType::Cpu => {
                let duration = profile
                    .duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_CPU_DURATION);
                let profiler = match Profiler::builder()
                    .frequency(self.config.frequency)
                    .span_ids(SpanIds::None)
                    .start()
                {
                    Ok(p) => p,
                    Err(e) if e.is_busy() => {
                        sh.busy.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    Err(e) => {
                        sh.count(&sh.collect_errors, "cannot profile CPU", &e);
                        return None;
                    }
                };
                // A shutdown ends the profile early; it is still uploaded.
                let mut stop = sh.stop.subscribe();
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    _ = stop.wait_for(Option::is_some) => {}
                }
                // Stopping, symbolizing and encoding take a while: off the
                // runtime, which keeps uploading.
                tokio::task::spawn_blocking(move || {
                    let p = profiler.stop().map_err(|e| e.to_string())?;
                    gzip(&p.to_pprof())
                })
                .await
            }
            ProfileType::Heap => {
                tokio::task::spawn_blocking(|| {
                    gzip(&HeapProfile::take().to_pprof(SampleType::InuseSpace))
                })
                .await
            }
            other => {
                let what = format!("{other:?}");
                sh.count(
                    &sh.collect_errors,
                    "the server asked for a profile type not offered",
                    &what,
                );
                return None;
            }
        };
        match encoded {
            Ok(Ok(bytes)) => {
                profile.profile_bytes = bytes;
                if profile.deployment.is_none() {
                    profile.deployment = Some(self.deployment.clone());
                }
                Some(profile)
            }
            Ok(Err(e)) => {
                sh.count(&sh.collect_errors, "cannot make a profile", &e);
                None
            }
            Err(e) => {
                sh.count(&sh.collect_errors, "the profile encoder panicked", &e);
                None
            }
        }
    }

    /// Uploads queued profiles, oldest first, until creation has stopped and
    /// nothing is left.
    async fn upload_loop(&self, created: &Notify) {
        let sh = &*self.shared;
        let mut creating = true;
        loop {
            let Some(profile) = lock(&sh.queue).pop_front() else {
                if !creating {
                    return;
                }
                tokio::select! {
                    () = sh.wake.notified() => {}
                    () = created.notified() => creating = false,
                }
                continue;
            };
            // Counted as dropped if the shutdown deadline cuts the upload off.
            let mut pending = Pending {
                counters: &sh.counters,
                profiles: 1,
            };
            let result = self
                .config
                .upload_backoff
                .run(&sh.counters, || self.update_profile(profile.clone()))
                .await;
            pending.profiles = 0;
            match result {
                Ok(()) => sh.counters.add_exported(1),
                Err(e) => {
                    sh.counters.add_dropped(1);
                    sh.counters.add_failed();
                    lock(&sh.log).report("a profile was dropped", &e);
                }
            }
        }
    }

    async fn update_profile(&self, profile: Profile) -> Result<(), Attempt> {
        let call = async {
            let mut request = tonic::Request::new(UpdateProfileRequest {
                profile: Some(profile),
                update_mask: None,
            });
            request.set_timeout(self.config.timeout);
            if let Some(auth) = &self.auth {
                let token = auth.header().await?;
                request.metadata_mut().insert("authorization", token);
            }
            let mut client = self.client.clone();
            client.update_profile(request).await.map(drop)
        };
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(Attempt::Retry(ExportError::new(format!(
                "UpdateProfile did not answer within {:?}",
                self.config.timeout
            )))),
        }
    }
}

/// Retries the transient codes (and connection errors, which tonic reports as
/// `UNAVAILABLE`, or as `UNKNOWN` carrying the transport error).
fn classify(status: &Status) -> Attempt {
    let retry = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal => {
            true
        }
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    };
    let err = ExportError::new(format!(
        "UpdateProfile answered {:?}: {}",
        status.code(),
        status.message()
    ));
    if retry {
        Attempt::Retry(err)
    } else {
        Attempt::Fail(err)
    }
}

/// The delay of the `google.rpc.RetryInfo` in `status`'s trailing metadata.
pub(crate) fn retry_delay(status: &Status) -> Option<Duration> {
    let value = status.metadata().get_bin(crate::RETRY_INFO_KEY)?;
    let bytes = value.to_bytes().ok()?;
    let info = crate::proto::rpc::RetryInfo::decode(bytes).ok()?;
    Duration::try_from(info.retry_delay?).ok()
}

fn gzip(profile: &tracewire::profile::pprof::Profile) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    profile.write_gzip(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Counts a profile still in flight as dropped when an upload is cut off.
struct Pending<'a> {
    counters: &'a ExportCounters,
    profiles: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.profiles > 0 {
            self.counters.add_dropped(self.profiles);
            self.counters.add_failed();
        }
    }
}

/// Application Default Credentials, found on first use; the provider caches
/// tokens until they expire.
#[derive(Default)]
struct Auth {
    provider: tokio::sync::OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
}

impl Auth {
    /// The `authorization` metadata; a missing credential is `UNAUTHENTICATED`
    /// (not retried), a token that could not be fetched `UNAVAILABLE`.
    async fn header(&self) -> Result<MetadataValue<Ascii>, Status> {
        let provider = self
            .provider
            .get_or_try_init(gcp_auth::provider)
            .await
            .map_err(|e| {
                Status::unauthenticated(format!(
                    "no Google Cloud credentials (Application Default Credentials): {e}"
                ))
            })?;
        let token = provider
            .token(&[crate::MONITORING_WRITE_SCOPE])
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot get a Google Cloud access token: {e}"))
            })?;
        let mut value = MetadataValue::try_from(format!("Bearer {}", token.as_str()))
            .map_err(|_| Status::unauthenticated("the access token is not ASCII"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn aborted_with(info: Option<Vec<u8>>) -> Status {
        let mut md = MetadataMap::new();
        if let Some(bytes) = info {
            md.insert_bin(crate::RETRY_INFO_KEY, MetadataValue::from_bytes(&bytes));
        }
        Status::with_metadata(Code::Aborted, "try later", md)
    }

    #[test]
    fn the_retry_delay_is_read_from_the_trailer() {
        let info = crate::proto::rpc::RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let status = aborted_with(Some(info.encode_to_vec()));
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay(&aborted_with(None)), None);
        assert_eq!(retry_delay(&aborted_with(Some(vec![0xff, 0xff]))), None);
        // A negative delay is no delay to honour.
        let negative = crate::proto::rpc::RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        };
        assert_eq!(
            retry_delay(&aborted_with(Some(negative.encode_to_vec()))),
            None
        );
    }

    #[test]
    fn only_transient_update_errors_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            assert!(matches!(
                classify(&Status::new(code, "")),
                Attempt::Retry(_)
            ));
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unknown,
        ] {
            assert!(matches!(classify(&Status::new(code, "")), Attempt::Fail(_)));
        }
    }
}
