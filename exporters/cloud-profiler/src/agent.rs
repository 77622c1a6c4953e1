//! The agent's thread: the `CreateProfile` loop that collects what the server
//! asks for, and the `UpdateProfile` loop that uploads it from a bounded queue.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracewire::alloc::{HeapProfile, SampleType};
use tracewire::export::{Attempt, ExportError};
use tracewire::profile::{Profiler, SpanIds};
use tracewire_transport::google::GoogleAuth;
use tracewire_transport::grpc::{describe, GrpcEndpoint};
use tracewire_transport::is_refused_handshake;
use tracewire_transport::upload::{Names, PendingQueue, Worker};

use crate::proto::v2::profiler_service_client::ProfilerServiceClient;
use crate::proto::v2::{
    CreateProfileRequest, Deployment, Profile, ProfileType, UpdateProfileRequest,
};
use crate::{CloudProfilerAgent, CloudProfilerBuilder, Error, Stats, DEFAULT_ENDPOINT};

/// The CPU profile's length when the server gives none (the agents' default).
const DEFAULT_CPU_DURATION: Duration = Duration::from_secs(10);

const NAMES: Names = Names {
    thread: "tracewire-cloud-profiler",
    role: "agent",
    items: "profiles",
};

pub(crate) struct Shared {
    /// exported = uploaded, dropped, failed = failed uploads, retried.
    pub(crate) queue: PendingQueue<Profile>,
    asked: AtomicU64,
    aborted: AtomicU64,
    create_errors: AtomicU64,
    busy: AtomicU64,
    collect_errors: AtomicU64,
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        let c = self.queue.counters().snapshot();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            asked: n(&self.asked),
            collected: self.queue.collected(),
            uploaded: c.exported,
            dropped: c.dropped,
            failed_uploads: c.failed,
            retries: c.retried,
            aborted: n(&self.aborted),
            create_errors: n(&self.create_errors),
            busy: n(&self.busy),
            collect_errors: n(&self.collect_errors),
            queued: self.queue.len() as u64,
        }
    }

    fn count(&self, counter: &AtomicU64, what: &str, err: &dyn fmt::Display) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.queue.report(what, err);
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
    auth: Option<GoogleAuth>,
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
        None => (
            DEFAULT_ENDPOINT.to_owned(),
            Some(GoogleAuth::adc(crate::MONITORING_WRITE_SCOPE)),
        ),
        Some(url) => (url.clone(), None),
    };
    let endpoint = GrpcEndpoint::new("Cloud Profiler endpoint", &url, &config.tls)?
        .with_connect_timeout(config.timeout)
        // The long poll may be idle for an hour: find a dead connection sooner.
        .with_keep_alive(Duration::from_secs(30), Duration::from_secs(20))
        .with_user_agent(concat!(
            "tracewire-cloud-profiler/",
            env!("CARGO_PKG_VERSION")
        ))?;
    let shared = Arc::new(Shared {
        queue: PendingQueue::new(NAMES.thread, config.queue_capacity),
        asked: AtomicU64::new(0),
        aborted: AtomicU64::new(0),
        create_errors: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        collect_errors: AtomicU64::new(0),
    });
    let thread_shared = Arc::clone(&shared);
    let agent_deployment = deployment.clone();
    let worker = Worker::spawn(NAMES, move || {
        // The channel's background task runs on the agent's runtime.
        let client = ProfilerServiceClient::new(endpoint.connect_lazy());
        let agent = Agent {
            shared: thread_shared,
            config,
            deployment: agent_deployment,
            types,
            client,
            auth,
        };
        Ok(agent.run())
    })?;
    Ok(CloudProfilerAgent {
        shared,
        deployment,
        endpoint: url,
        worker,
    })
}

impl Agent {
    /// Creates, collects and uploads until shut down, then uploads what is left
    /// until the deadline.
    async fn run(self) {
        let queue = &self.shared.queue;
        let work = async {
            tokio::join!(
                async {
                    self.create_loop().await;
                    queue.close();
                },
                self.upload_loop(),
            )
        };
        queue.until_deadline(work).await;
    }

    /// Asks for profiles to make until shut down.
    async fn create_loop(&self) {
        let sh = &*self.shared;
        let mut failures = 0u32;
        while !sh.queue.is_stopping() {
            let answer = tokio::select! {
                r = self.create_profile() => r,
                () = sh.queue.stopping() => return,
            };
            let wait = match answer {
                Ok(profile) => {
                    failures = 0;
                    sh.asked.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = self.collect(profile).await {
                        sh.queue.push(p);
                    }
                    continue;
                }
                Err(status) => match retry_delay(&status) {
                    Some(delay) if status.code() == Code::Aborted => {
                        sh.aborted.fetch_add(1, Ordering::Relaxed);
                        delay
                    }
                    // Asked again soon, the certificate would be refused again.
                    _ if is_refused_handshake(&status) => {
                        let why = describe(&status);
                        sh.count(&sh.create_errors, "CreateProfile failed", &why);
                        failures = failures.saturating_add(1);
                        self.config.backoff.max_delay
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
                () = sh.queue.stopping() => return,
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
            request
                .metadata_mut()
                .insert("authorization", authorization(auth).await?);
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
                    .with_frequency(self.config.frequency)
                    .with_span_ids(SpanIds::None)
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
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = sh.queue.stopping() => {}
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
    async fn upload_loop(&self) {
        let queue = &self.shared.queue;
        while let Some(profile) = queue.pop().await {
            queue
                .send(
                    1,
                    &self.config.upload_backoff,
                    "a profile was dropped",
                    || self.update_profile(profile.clone()),
                )
                .await;
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
                request
                    .metadata_mut()
                    .insert("authorization", authorization(auth).await?);
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
    // A certificate refused now is refused on every retry.
    let retry = retry && !is_refused_handshake(status);
    let err = ExportError::new(format!("UpdateProfile answered {}", describe(status)));
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

/// The `authorization` metadata; a missing credential is `UNAUTHENTICATED`
/// (not retried), a token that could not be fetched `UNAVAILABLE`.
async fn authorization(auth: &GoogleAuth) -> Result<MetadataValue<Ascii>, Status> {
    match auth.authorization().await {
        Ok(a) => Ok(a.header),
        Err(e) if e.is_transient() => Err(Status::unavailable(e.to_string())),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
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
