//! Pooled data connections (rathole's design): an agent keeps a few connections open to
//! the server's data port, each secured like its link and introduced by the ticket the
//! server gave that link; a TCP visitor takes one, the server writes [`START`] on it, and
//! from then on it carries that visitor's raw bytes, with no framing of ours. A visitor
//! arriving while its agent has none ready rides a virtual channel of the link instead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use zs::secure::SecureStream;
use zs::{ClientSecurity, ServerSecurity};

/// The byte the server writes on a pooled connection when a visitor takes it.
pub(crate) const START: u8 = 1;
/// Bytes of a data connection's ticket.
pub(crate) const TICKET_LEN: usize = 32;
/// Idle pooled connections an agent may keep per service and server link (the server
/// closes those beyond it).
pub const MAX_POOL: usize = 64;
/// Idle pooled connections an agent keeps per service and server link unless its file
/// says otherwise.
pub const DEFAULT_POOL: usize = 8;
/// Data connections in their handshake at once; more are closed at once (their visitors
/// then ride virtual channels, so a flood of the data port starves no one).
const MAX_PENDING: usize = 256;
/// A data connection's handshake and ticket must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An agent's idle pooled connections for one service.
#[derive(Default)]
pub(crate) struct Pool(Mutex<Vec<SecureStream>>);

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SecureStream>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `stream` for a visitor, unless [`MAX_POOL`] are kept already.
    fn keep(&self, stream: SecureStream) -> bool {
        let mut kept = self.lock();
        // Those the agent closed meanwhile make room.
        kept.retain_mut(alive);
        (kept.len() < MAX_POOL).then(|| kept.push(stream)).is_some()
    }

    /// A pooled connection still open, told to start.
    pub(crate) async fn take(&self) -> Option<SecureStream> {
        loop {
            let mut stream = {
                let mut kept = self.lock();
                loop {
                    let mut s = kept.pop()?;
                    if alive(&mut s) {
                        break s;
                    }
                }
            };
            if stream.write_all(&[START]).await.is_ok() && stream.flush().await.is_ok() {
                return Some(stream);
            }
        }
    }

    /// Idle pooled connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// An idle pooled connection is alive while it has nothing to read: the agent sends
/// nothing before [`START`], so a readable one was closed (or misbehaves).
fn alive(stream: &mut SecureStream) -> bool {
    let mut byte = [0u8; 1];
    stream.read(&mut byte).now_or_never().is_none()
}

/// Finds the pool a ticket introduces (`None`: unknown, or its link is gone).
pub(crate) type Tickets = Arc<dyn Fn(&[u8; TICKET_LEN]) -> Option<Weak<Pool>> + Send + Sync>;

/// Takes data connections on `listener`: each one's handshake (as `security` says) and
/// ticket, then keeps it in the pool its ticket names.
pub(crate) async fn accept_data(listener: TcpListener, security: ServerSecurity, tickets: Tickets) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("xnat data accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::debug!(%from, "xnat data connection closed: {MAX_PENDING} handshakes already");
            continue;
        };
        let (security, tickets) = (security.clone(), tickets.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let introduced = async {
                let mut stream = SecureStream::accept(tcp, &security, HANDSHAKE_TIMEOUT).await?;
                let mut ticket = [0u8; TICKET_LEN];
                tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut ticket)).await??;
                Ok::<_, std::io::Error>((stream, ticket))
            };
            match introduced.await {
                Ok((stream, ticket)) => match tickets(&ticket).and_then(|p| p.upgrade()) {
                    Some(pool) if pool.keep(stream) => {}
                    Some(_) => tracing::debug!(%from, "xnat data connection closed: the pool is full"),
                    None => tracing::info!(%from, "xnat data connection closed: unknown ticket"),
                },
                Err(e) => tracing::debug!(%from, "xnat data connection failed: {e}"),
            }
        });
    }
}

/// Keeps one idle data connection to `data` open for a service (ticket `ticket`): when a
/// visitor takes it, `serve` carries it and another is opened. Ends when dropped (the
/// link that gave the ticket is gone); visitors being carried go on.
pub(crate) async fn keep_one<F, Fut>(
    data: SocketAddr,
    security: ClientSecurity,
    ticket: [u8; TICKET_LEN],
    serve: F,
) where
    F: Fn(SecureStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = super::agent::BACKOFF_FIRST;
    loop {
        match wait_for_visitor(data, &security, &ticket).await {
            Ok(stream) => {
                backoff = super::agent::BACKOFF_FIRST;
                tokio::spawn(serve(stream));
                continue;
            }
            Err(e) => tracing::debug!(%data, "xnat data connection: {e}; again in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(super::agent::BACKOFF_MAX);
    }
}

/// Opens a data connection, introduces it, and waits until a visitor takes it.
async fn wait_for_visitor(
    data: SocketAddr,
    security: &ClientSecurity,
    ticket: &[u8; TICKET_LEN],
) -> std::io::Result<SecureStream> {
    let mut stream = SecureStream::connect(data, security, HANDSHAKE_TIMEOUT).await?;
    stream.write_all(ticket).await?;
    stream.flush().await?;
    let mut start = [0u8; 1];
    match stream.read(&mut start).await? {
        1 if start[0] == START => Ok(stream),
        0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the server")),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a start byte")),
    }
}
