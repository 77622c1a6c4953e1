//! A custom profile, as Go's `pprof.NewProfile("blobstore.Open")`: every open blob
//! is recorded with the stack that opened it, and `/debug/pprof/blobstore.Open`
//! shows the blobs still open (here 1000 opened, 200 closed: 800 live).
//!
//! ```text
//! cargo run --release -p examples --bin blobstore -- --addr 127.0.0.1:6060
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/blobstore.Open
//! ```
//!
//! It prints `listening on http://ADDR` once bound (`--addr 127.0.0.1:0` picks a free
//! port) and stops on Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tracewire::profile::CustomProfile;
use tracewire_http::debug::PprofService;

/// A stored blob, open while this handle lives.
struct Blob {
    id: u64,
    open: CustomProfile,
}

/// A tiny blob store that tracks its open blobs in a custom profile.
struct Store {
    open: CustomProfile,
}

impl Store {
    fn new() -> Result<Store, tracewire::profile::ProfileError> {
        Ok(Store {
            open: CustomProfile::new("blobstore.Open")?,
        })
    }

    /// Opens blob `id`; the profile keeps this call's stack until it is closed.
    #[inline(never)]
    fn open(&self, id: u64) -> Blob {
        self.open.add(&id, 0);
        Blob {
            id,
            open: self.open.clone(),
        }
    }
}

impl Blob {
    fn close(self) {
        self.open.remove(&self.id);
    }
}

fn main() {
    let addr = match examples::parse_addr(std::env::args().skip(1), "127.0.0.1:8080") {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}\nusage: blobstore [--addr HOST:PORT]   (default 127.0.0.1:8080)");
            std::process::exit(2);
        }
    };
    let store = Store::new().expect("blobstore.Open is created once");
    let mut blobs: Vec<Blob> = (0..1000).map(|id| store.open(id)).collect();
    for blob in blobs.drain(..200) {
        blob.close();
    }
    eprintln!("blobstore: {} blobs open", store.open.count());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    if let Err(e) = runtime.block_on(serve(addr)) {
        eprintln!("blobstore: {e}");
        std::process::exit(1);
    }
    drop(blobs);
}

/// Serves `/debug/pprof` until Ctrl-C.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let pprof = PprofService::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = TowerToHyperService::new(pprof.clone());
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}
