//! The closed-loop load driver: per connection, keep `depth` requests in flight; every
//! read's replies are answered with new requests in one write. The same driver runs
//! against every server, so only the server differs between figures.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::secure::SecureStream;
use zs::ClientSecurity;

use crate::codec::BenchCodec;
use crate::harness::Target;
use crate::stats::{histogram, Figures};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub connections: usize,
    pub depth: usize,
    pub payload: usize,
    pub duration: Duration,
}

/// Runs the load against `target` (over a secure channel if it has one) and returns its
/// figures.
pub(crate) async fn run<C: BenchCodec + Default>(target: &Target, load: Load) -> Result<Figures, String> {
    match target.security {
        ClientSecurity::Plaintext => {
            let mut streams = Vec::with_capacity(load.connections);
            for _ in 0..load.connections {
                let addr = target.addr;
                let s = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                streams.push(s);
            }
            drive::<C, _>(streams, load).await
        }
        _ => {
            let mut streams = Vec::with_capacity(load.connections);
            for _ in 0..load.connections {
                let s = SecureStream::connect(target.addr, &target.security, Duration::from_secs(10))
                    .await
                    .map_err(|e| format!("connect {}: {e}", target.addr))?;
                streams.push(s);
            }
            drive::<C, _>(streams, load).await
        }
    }
}

async fn drive<C: BenchCodec + Default, S>(streams: Vec<S>, load: Load) -> Result<Figures, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + load.duration;
    let tasks: Vec<_> =
        streams.into_iter().map(|s| tokio::spawn(connection::<C, S>(s, load, deadline))).collect();
    let mut all = histogram();
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}

async fn connection<C: BenchCodec + Default, S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    load: Load,
    deadline: Instant,
) -> Result<Histogram<u64>, String> {
    let mut codec = C::default();
    let payload = vec![b'x'; load.payload];
    let mut hist = histogram();
    let mut sent: VecDeque<(u32, Instant)> = VecDeque::with_capacity(load.depth);
    let (mut out, mut input) = (BytesMut::with_capacity(16 << 10), BytesMut::with_capacity(64 << 10));
    let mut next_id = 1u32;
    let now = Instant::now();
    for _ in 0..load.depth {
        codec.encode_request(&mut out, next_id, &payload);
        sent.push_back((next_id, now));
        next_id = next_id.wrapping_add(1).max(1);
    }
    let hard_stop = deadline + Duration::from_secs(10);
    while !sent.is_empty() {
        if !out.is_empty() {
            s.write_all(&out).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            out.clear();
        }
        let read = tokio::time::timeout_at(hard_stop.into(), s.read_buf(&mut input)).await;
        match read {
            Err(_) => return Err("no reply 10 s after the end of the run".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(0)) => return Err("server closed the connection".into()),
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        while let Some(id) = codec.decode_reply(&mut input)? {
            let (want, at) = sent.pop_front().ok_or("a reply nobody asked for")?;
            if id != 0 && id != want {
                return Err(format!("reply {id} arrived where {want} was expected"));
            }
            hist.saturating_record(now.duration_since(at).as_micros().max(1) as u64);
            if now < deadline {
                codec.encode_request(&mut out, next_id, &payload);
                sent.push_back((next_id, now));
                next_id = next_id.wrapping_add(1).max(1);
            }
        }
    }
    Ok(hist)
}
