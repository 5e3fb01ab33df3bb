//! UDP services: each visitor (a source address) is a session carried on its own virtual
//! channel, its datagrams framed with a 2-byte big-endian length; a session idle for
//! [`UDP_IDLE`] ends. Datagrams that find a full queue are dropped, as UDP may.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::carry::Activity;
use crate::limits::Counted;

/// A UDP session with no datagram either way for this long ends.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Datagrams queued per session towards the tunnel; more are dropped.
const QUEUE: usize = 256;
/// Bytes of datagrams queued towards the tunnel by all of a service's sessions together;
/// more are dropped (a sender spraying big datagrams from many addresses holds no more).
const QUEUED_BYTES: usize = 16 << 20;

/// A datagram on its way to the tunnel, counted against [`QUEUED_BYTES`] until sent.
struct Queued(Vec<u8>, Counted);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;

/// Writes one framed datagram.
async fn write_frame(w: &mut (impl AsyncWrite + Unpin), datagram: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    frame.extend_from_slice(datagram);
    w.write_all(&frame).await
}

/// Reads one framed datagram into `buf`; `None` at the end of the stream.
async fn read_frame(r: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u16::from_be_bytes(len) as usize;
    buf.resize(n, 0);
    r.read_exact(&mut buf[..n]).await?;
    Ok(Some(n))
}

/// The agent's side of one session: datagrams from the channel go to `local` from a socket
/// of their own, its answers come back on the channel.
pub(crate) async fn serve_session<S: AsyncRead + AsyncWrite + Unpin>(
    channel: S,
    local: &str,
) -> std::io::Result<()> {
    let target = tokio::net::lookup_host(local)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{local}: no address")))?;
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    let (mut from_tunnel, mut to_tunnel) = tokio::io::split(channel);
    let activity = Activity::new();
    // Each direction is one loop; a loop is only ever dropped whole, at the end.
    let inbound = async {
        let mut buf = Vec::new();
        while let Ok(Some(n)) = read_frame(&mut from_tunnel, &mut buf).await {
            activity.touch();
            let _ = socket.send(&buf[..n]).await;
        }
    };
    let outbound = async {
        let mut answer = vec![0u8; MAX_DATAGRAM];
        while let Ok(n) = socket.recv(&mut answer).await {
            activity.touch();
            if write_frame(&mut to_tunnel, &answer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
        _ = activity.idle(UDP_IDLE) => {}
    }
    Ok(())
}

/// What the public side needs to start a session: a channel to an agent, or none.
/// A channel to an agent for a new session, and what the session holds while it lasts (the
/// agent's share of the load).
pub(crate) type Opener = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Option<(zs::VirtualStream, Box<dyn Send>)>>
        + Send
        + Sync,
>;

/// The public side of a UDP service: sessions by visitor address, each on a channel
/// `open` makes; at most `max` at once.
pub(crate) async fn serve_public(socket: UdpSocket, open: Opener, max: usize, name: String) {
    let socket = Arc::new(socket);
    let sessions: Arc<std::sync::Mutex<HashMap<SocketAddr, mpsc::Sender<Queued>>>> = Arc::default();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        let Some(charge) = Counted::take_n(&queued, n, QUEUED_BYTES) else { continue };
        let datagram = Queued(buf[..n].to_vec(), charge);
        let known = sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&from).cloned();
        if let Some(tx) = known {
            let _ = tx.try_send(datagram);
            continue;
        }
        if sessions.lock().unwrap_or_else(|p| p.into_inner()).len() >= max {
            tracing::warn!(service = %name, %from, "xnat udp visitor dropped: {max} sessions already");
            continue;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(datagram);
        sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(from, tx);
        let (socket, sessions, open, name) = (socket.clone(), sessions.clone(), open.clone(), name.clone());
        tokio::spawn(async move {
            match open().await {
                Some((channel, _load)) => run_public_session(channel, rx, &socket, from).await,
                None => tracing::warn!(service = %name, %from, "xnat udp visitor dropped: no agent"),
            }
            sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&from);
        });
    }
}

async fn run_public_session(
    channel: zs::VirtualStream,
    mut rx: mpsc::Receiver<Queued>,
    socket: &UdpSocket,
    visitor: SocketAddr,
) {
    let (mut from_tunnel, mut to_tunnel) = tokio::io::split(channel);
    let activity = Activity::new();
    let inbound = async {
        while let Some(Queued(d, _charge)) = rx.recv().await {
            activity.touch();
            if write_frame(&mut to_tunnel, &d).await.is_err() {
                return;
            }
        }
    };
    let outbound = async {
        let mut buf = Vec::new();
        while let Ok(Some(n)) = read_frame(&mut from_tunnel, &mut buf).await {
            activity.touch();
            let _ = socket.send_to(&buf[..n], visitor).await;
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
        _ = activity.idle(UDP_IDLE) => {}
    }
}

/// Reads framed datagrams from `data` until it ends or breaks (the fuzz target's body):
/// how many whole ones it held.
pub(crate) fn decode_frames(mut data: &[u8]) -> usize {
    // Reading a slice never waits: the future completes when first polled.
    let decoding = async {
        let mut buf = Vec::new();
        let mut n = 0;
        while let Ok(Some(_)) = read_frame(&mut data, &mut buf).await {
            n += 1;
        }
        n
    };
    futures_util::FutureExt::now_or_never(decoding).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_are_read_whole_and_a_cut_one_ends_the_stream() {
        assert_eq!(super::decode_frames(b"\x00\x03abc\x00\x00\x00\x05hello"), 3);
        assert_eq!(super::decode_frames(b"\x00\x03abc\x00\x05hel"), 1);
        assert_eq!(super::decode_frames(b"\xff"), 0);
    }
}
