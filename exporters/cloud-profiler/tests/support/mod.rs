//! What the agent's tests share: a stand-in for Cloud Profiler on loopback (a
//! tonic server implementing the generated `ProfilerService`, answering
//! `CreateProfile` from a script), over plain HTTP/2 or TLS with a self-signed
//! certificate made by `rcgen` for each test, and a way to run one test in a
//! child process to read what the agent logs on standard error.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tracewire::export::Backoff;
use tracewire_cloud_profiler::proto::rpc::RetryInfo;
use tracewire_cloud_profiler::proto::v2::profiler_service_server::{
    ProfilerService, ProfilerServiceServer,
};
use tracewire_cloud_profiler::proto::v2::{
    CreateOfflineProfileRequest, CreateProfileRequest, Profile, ProfileType, UpdateProfileRequest,
};
use tracewire_cloud_profiler::{CloudProfilerAgent, CloudProfilerBuilder, RETRY_INFO_KEY};

/// A self-signed server certificate and its key, PEM.
pub struct SelfSigned {
    /// What a client is told to trust.
    pub pem: String,
    pub key_pem: String,
}

impl SelfSigned {
    /// For `127.0.0.1` and `localhost`.
    pub fn loopback() -> SelfSigned {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).unwrap();
        SelfSigned {
            pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
        }
    }
}

/// CPU profiles are process-wide: one test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the stand-in answers a `CreateProfile` with; once the script is done, it
/// hangs as the real server's long poll does.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Collect(ProfileType, Option<Duration>),
    Aborted(Duration),
}

#[derive(Default)]
pub struct State {
    pub script: Mutex<VecDeque<Answer>>,
    pub creates: Mutex<Vec<(Instant, CreateProfileRequest)>>,
    pub updates: Mutex<Vec<(Instant, UpdateProfileRequest)>>,
    /// `UpdateProfile` calls to answer UNAVAILABLE before accepting.
    pub failing_updates: AtomicUsize,
    pub names: AtomicUsize,
}

/// The `ProfilerService` the tests stand up, sharing its [`State`] with them.
pub struct StandIn(pub Arc<State>);

#[tonic::async_trait]
impl ProfilerService for StandIn {
    async fn create_profile(
        &self,
        request: Request<CreateProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let request = request.into_inner();
        self.0
            .creates
            .lock()
            .unwrap()
            .push((Instant::now(), request.clone()));
        let next = self.0.script.lock().unwrap().pop_front();
        match next {
            Some(Answer::Collect(kind, duration)) => {
                let n = self.0.names.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Response::new(Profile {
                    name: format!("projects/test-project/profiles/{n}"),
                    profile_type: kind as i32,
                    deployment: request.deployment,
                    duration: duration.map(|d| d.try_into().unwrap()),
                    ..Profile::default()
                }))
            }
            Some(Answer::Aborted(delay)) => {
                let info = RetryInfo {
                    retry_delay: Some(delay.try_into().unwrap()),
                };
                let mut md = MetadataMap::new();
                md.insert_bin(
                    RETRY_INFO_KEY,
                    MetadataValue::from_bytes(&info.encode_to_vec()),
                );
                Err(Status::with_metadata(Code::Aborted, "come back later", md))
            }
            None => std::future::pending().await,
        }
    }

    async fn create_offline_profile(
        &self,
        _: Request<CreateOfflineProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        Err(Status::unimplemented("offline profiles"))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let failing = self
            .0
            .failing_updates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Status::unavailable("busy"));
        }
        let request = request.into_inner();
        let profile = request.profile.clone().unwrap_or_default();
        self.0
            .updates
            .lock()
            .unwrap()
            .push((Instant::now(), request));
        Ok(Response::new(profile))
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    tls: bool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn start(script: &[Answer]) -> Server {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)), script)
    }

    pub fn on(addr: SocketAddr, script: &[Answer]) -> Server {
        Self::serve(addr, None, script)
    }

    /// Serves over TLS with `cert` on a free loopback port.
    pub fn start_tls(cert: &SelfSigned, script: &[Answer]) -> Server {
        let identity = Identity::from_pem(&cert.pem, &cert.key_pem);
        let tls = ServerTlsConfig::new().identity(identity);
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0)), Some(tls), script)
    }

    fn serve(addr: SocketAddr, tls: Option<ServerTlsConfig>, script: &[Answer]) -> Server {
        let state = Arc::new(State::default());
        state.script.lock().unwrap().extend(script.iter().copied());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let service = ProfilerServiceServer::new(StandIn(Arc::clone(&state)));
        let with_tls = tls.is_some();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        runtime.spawn(async move {
            let _ = builder
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Server {
            addr,
            state,
            tls: with_tls,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn updates(&self) -> Vec<(Instant, UpdateProfileRequest)> {
        self.state.updates.lock().unwrap().clone()
    }

    pub fn creates(&self) -> Vec<(Instant, CreateProfileRequest)> {
        self.state.creates.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) for `n` accepted uploads.
    pub fn wait_for_updates(
        &self,
        n: usize,
        limit: Duration,
    ) -> Vec<(Instant, UpdateProfileRequest)> {
        let start = Instant::now();
        while self.updates().len() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.updates()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub fn agent(url: &str) -> CloudProfilerBuilder {
    CloudProfilerAgent::builder()
        .with_project_id("test-project")
        .with_service("checkout")
        .with_service_version("1.2.3")
        .with_zone("europe-west1-b")
        .with_endpoint(url)
        .with_frequency(250)
        .with_backoff(Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_elapsed: Duration::MAX,
        })
        .with_upload_backoff(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(20),
        })
}

pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Set in the child process [`in_child`] starts.
pub const CHILD_ENV: &str = "TRACEWIRE_TEST_CHILD";

/// Whether this process is the child [`in_child`] started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs test `name` of this test binary alone in a child process, its output
/// not captured: what it printed on standard error, once it passed.
pub fn in_child(name: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test:\n{stdout}"
    );
    stderr
}
