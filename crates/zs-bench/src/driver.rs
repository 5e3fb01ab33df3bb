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
use crate::stats::{histogram, Figures, Recorder};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub connections: usize,
    pub depth: usize,
    pub payload: usize,
    pub duration: Duration,
    /// Open loop: this many requests per second in all, each sent when due and timed from
    /// when it was due (`depth` is then ignored). `None`: closed loop.
    pub rate: Option<f64>,
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
    let n = streams.len();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| match load.rate {
            None => tokio::spawn(connection::<C, S>(s, load, deadline)),
            Some(rate) => {
                // Each connection sends every n/rate seconds, the connections staggered.
                let every = Duration::from_secs_f64(n as f64 / rate.max(1e-9));
                let first = start + every.mul_f64(i as f64 / n as f64);
                tokio::spawn(open_connection::<C, S>(s, load, first, every, deadline))
            }
        })
        .collect();
    let mut all = histogram();
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}

/// One driven connection: its codec, buffers, requests awaiting replies and latencies.
struct Driven<C> {
    codec: C,
    payload: Vec<u8>,
    hist: Recorder,
    /// Requests sent, oldest first, with the time each is measured from.
    sent: VecDeque<(u32, Instant)>,
    out: BytesMut,
    input: BytesMut,
    next_id: u32,
}

impl<C: BenchCodec + Default> Driven<C> {
    fn new(payload: usize) -> Self {
        Driven {
            codec: C::default(),
            payload: vec![b'x'; payload],
            hist: Recorder::new(),
            sent: VecDeque::new(),
            out: BytesMut::with_capacity(16 << 10),
            input: BytesMut::with_capacity(64 << 10),
            next_id: 1,
        }
    }

    /// Encodes one request, timed from `at`.
    fn request(&mut self, at: Instant) {
        self.codec.encode_request(&mut self.out, self.next_id, &self.payload);
        self.sent.push_back((self.next_id, at));
        self.next_id = self.next_id.wrapping_add(1).max(1);
    }

    /// Writes every encoded request with one write.
    async fn send<S: AsyncWrite + Unpin>(&mut self, s: &mut S) -> Result<(), String> {
        if !self.out.is_empty() {
            s.write_all(&self.out).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            self.out.clear();
        }
        Ok(())
    }

    /// Takes every whole reply that arrived, matches each with the oldest request and
    /// records its latency; returns how many.
    fn replies(&mut self, now: Instant) -> Result<usize, String> {
        let mut n = 0;
        while let Some(id) = self.codec.decode_reply(&mut self.input)? {
            let (want, at) = self.sent.pop_front().ok_or("a reply nobody asked for")?;
            if id != 0 && id != want {
                return Err(format!("reply {id} arrived where {want} was expected"));
            }
            self.hist.record(now.duration_since(at));
            n += 1;
        }
        Ok(n)
    }
}

const NO_REPLY: &str = "no reply 10 s after the end of the run";

/// A read's outcome as the driver sees it: end of stream is an error too.
fn read_result(r: std::io::Result<usize>) -> Result<(), String> {
    match r {
        Ok(0) => Err("server closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn connection<C: BenchCodec + Default, S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    load: Load,
    deadline: Instant,
) -> Result<Histogram<u64>, String> {
    let mut d = Driven::<C>::new(load.payload);
    let now = Instant::now();
    for _ in 0..load.depth {
        d.request(now);
    }
    let hard_stop = deadline + Duration::from_secs(10);
    while !d.sent.is_empty() {
        d.send(&mut s).await?;
        let read = tokio::time::timeout_at(hard_stop.into(), s.read_buf(&mut d.input)).await;
        read_result(read.map_err(|_| NO_REPLY.to_string())?)?;
        let now = Instant::now();
        let answered = d.replies(now)?;
        if now < deadline {
            (0..answered).for_each(|_| d.request(now));
        }
    }
    Ok(d.hist.finish())
}

/// Open loop on one connection: requests are due every `every` from `first` until
/// `deadline`; all that are due are sent in one write, and each reply's latency is measured
/// from when its request was due (so a stalled server is charged for the requests it
/// delayed: no coordinated omission).
async fn open_connection<C: BenchCodec + Default, S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    load: Load,
    first: Instant,
    every: Duration,
    deadline: Instant,
) -> Result<Histogram<u64>, String> {
    let mut d = Driven::<C>::new(load.payload);
    let mut due = first;
    let hard_stop = deadline + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        while due <= now && due < deadline {
            d.request(due);
            due += every;
        }
        d.send(&mut s).await?;
        if due >= deadline && d.sent.is_empty() {
            return Ok(d.hist.finish());
        }
        let wake = if due < deadline { due } else { hard_stop };
        tokio::select! {
            r = s.read_buf(&mut d.input) => read_result(r)?,
            _ = tokio::time::sleep_until(wake.into()) => {
                if wake == hard_stop {
                    return Err(NO_REPLY.into());
                }
            }
        }
        d.replies(Instant::now())?;
    }
}

/// The load through an API client (ours or a peer's): `call(client)` makes one call.
/// Closed loop: `depth` tasks per client, each awaiting its call before the next. Open
/// loop: per client, calls start when due and are timed from when they were due.
pub(crate) async fn api_load<T, F, Fut>(clients: Vec<T>, load: Load, call: F) -> Result<Figures, String>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + load.duration;
    let n = clients.len();
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match load.rate {
            None => {
                for _ in 0..load.depth {
                    let (c, call) = (c.clone(), call.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut h = Recorder::new();
                        // One clock read per call: each call ends where the next begins.
                        let mut t = Instant::now();
                        while t < deadline {
                            call(c.clone()).await?;
                            let now = Instant::now();
                            h.record(now - t);
                            t = now;
                        }
                        Ok::<_, String>(h.finish())
                    }));
                }
            }
            Some(rate) => {
                let every = Duration::from_secs_f64(n as f64 / rate.max(1e-9));
                let mut due = start + every.mul_f64(i as f64 / n as f64);
                let call = call.clone();
                tasks.push(tokio::spawn(async move {
                    use futures_util::stream::{FuturesUnordered, StreamExt};
                    let mut h = Recorder::new();
                    let mut in_flight = FuturesUnordered::new();
                    let hard_stop = deadline + Duration::from_secs(10);
                    while due < deadline || !in_flight.is_empty() {
                        while due <= Instant::now() && due < deadline {
                            let (fut, at) = (call(c.clone()), due);
                            in_flight.push(async move { fut.await.map(|()| at) });
                            due += every;
                        }
                        let wake = if due < deadline { due } else { hard_stop };
                        tokio::select! {
                            Some(done) = in_flight.next() => {
                                let at = done?;
                                h.record(at.elapsed());
                            }
                            _ = tokio::time::sleep_until(wake.into()) => {
                                if wake == hard_stop {
                                    return Err("no reply 10 s after the end of the run".into());
                                }
                            }
                        }
                    }
                    Ok(h.finish())
                }));
            }
        }
    }
    let mut all = histogram();
    for t in tasks {
        all.add(&t.await.map_err(|e| e.to_string())??).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}
