//! What every scenario starts with: runtimes, and our server beside a floor server.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use zs::{IncomingStream, Router, ServerConfig};

/// The commands `zs serve` and the in-process benchmarks serve: `echo` (console),
/// `echo_stream` (stream), `sink` (big stream: read, verify, discard); `stats` is added by
/// the server.
pub fn builtin_router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.stream("echo_stream", |_, df| df);
    r.big_stream("sink", |_, mut stream: IncomingStream| async move {
        while let Some(chunk) = stream.next_chunk().await {
            chunk?;
        }
        Ok::<_, zs::CallError>(())
    });
    r
}

/// A two-thread runtime.
pub(crate) fn runtime(name: &str) -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Starts our server (the built-in router) and a floor server (`floor` serving a
/// listener) on a runtime of their own; they serve until the process ends. Returns the
/// runtime and the addresses of ours and the floor.
pub(crate) fn start_servers<F>(
    floor: fn(TcpListener) -> F,
) -> Result<(Runtime, SocketAddr, SocketAddr), String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = runtime("zs-bench-server")?;
    let (ours, floor_addr) = rt
        .block_on(async {
            let ours = zs::Server::bind("127.0.0.1:0", builtin_router(), ServerConfig::default()).await?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let floor_addr = listener.local_addr()?;
            tokio::spawn(floor(listener));
            std::mem::forget(ours.clone()); // served until the process ends
            Ok::<_, std::io::Error>((ours.local_addr(), floor_addr))
        })
        .map_err(|e| e.to_string())?;
    Ok((rt, ours, floor_addr))
}
