//! `CompatClient`: calls an unmodified ZServer4D server. The original's rules hold: one
//! request at a time, its result matched by position; direct commands and transfers are
//! queued behind it in order. Requests go out unencrypted (cipher 0), which every
//! ZServer4D server accepts and mirrors in its results.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use zs_compat::dfe::Dfe;
pub use zs_compat::frame::Body;
use zs_compat::frame::{self, CompatLimits, Decoded, FrameKind, CHUNK_SIZE};
use zs_compat::handshake::{self, CipherModel};
use zs_compat::seq::{self, SeqConfig, SeqLayer};
use zs_compat::HashKind;

/// Settings of a [`CompatClient`].
#[derive(Debug, Clone)]
pub struct CompatClientConfig {
    /// Use the sequence-packet layer (the original's default: on). Must match the server.
    pub sequence_packets: bool,
    /// Hash kind of the verify codes sent (default MD5, as the original's default profile).
    pub hash: HashKind,
    /// Size limits of what is read.
    pub limits: CompatLimits,
    /// The sequence layer's bounds.
    pub seq: SeqConfig,
    /// Connecting, and each request's result, must take less than this (default 30 s).
    pub timeout: Duration,
    /// Compress BigStream chunks and CompleteBuffers (zlib containers; default off).
    pub compress: bool,
}

impl Default for CompatClientConfig {
    fn default() -> Self {
        CompatClientConfig {
            sequence_packets: true,
            hash: HashKind::FastMd5,
            limits: CompatLimits::default(),
            seq: SeqConfig::default(),
            timeout: Duration::from_secs(30),
            compress: false,
        }
    }
}

/// Why a call to a ZServer4D server failed.
#[derive(Debug, thiserror::Error)]
pub enum CompatClientError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] zs_compat::CompatError),
    /// No result within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A connection to a ZServer4D server.
pub struct CompatClient {
    io: Mutex<Io>,
    model: CipherModel,
    config: CompatClientConfig,
}

struct Io {
    tcp: TcpStream,
    seq: Option<SeqLayer>,
    raw: BytesMut,
    plain: BytesMut,
    out: BytesMut,
    limits: CompatLimits,
}

impl Io {
    async fn send(&mut self, frame: &[u8]) -> Result<(), CompatClientError> {
        match &mut self.seq {
            Some(layer) => layer.send(frame, Instant::now(), &mut self.out)?,
            None => self.out.extend_from_slice(frame),
        }
        self.tcp.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads more input through the sequence layer (answering acks and keepalives).
    async fn fill(&mut self) -> Result<(), CompatClientError> {
        if self.tcp.read_buf(&mut self.raw).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the server").into());
        }
        self.unpack().await
    }

    async fn unpack(&mut self) -> Result<(), CompatClientError> {
        match &mut self.seq {
            Some(layer) => {
                while let Some((p, n)) = seq::decode(&self.raw)? {
                    self.raw.advance(n);
                    layer.receive(p, Instant::now(), &mut self.plain, &mut self.out)?;
                }
            }
            None => self.plain.extend_from_slice(&self.raw.split()),
        }
        if !self.out.is_empty() {
            self.tcp.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Takes what arrived without waiting (acks of what was sent).
    async fn drain(&mut self) -> Result<(), CompatClientError> {
        loop {
            match self.tcp.try_read_buf(&mut self.raw) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => self.unpack().await?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn result(&mut self) -> Result<bytes::Bytes, CompatClientError> {
        loop {
            if let Some((r, n)) = frame::decode_reply(&self.plain, &self.limits)? {
                self.plain.advance(n);
                return Ok(r.payload);
            }
            self.fill().await?;
        }
    }

    async fn signal(&mut self) -> Result<Decoded, CompatClientError> {
        loop {
            if let Some((f, n)) = frame::decode(&self.plain, &self.limits)? {
                self.plain.advance(n);
                if matches!(f, Decoded::FragmentSignal | Decoded::DoneSignal) {
                    return Ok(f);
                }
                return Err(zs_compat::CompatError::malformed(
                    "BigStream",
                    "a frame other than a signal came back",
                )
                .into());
            }
            self.fill().await?;
        }
    }
}

impl CompatClient {
    /// Connects and makes the `__@CipherModel` handshake.
    pub async fn connect(
        addr: SocketAddr,
        config: CompatClientConfig,
    ) -> Result<CompatClient, CompatClientError> {
        let timeout = config.timeout;
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let seq = config.sequence_packets.then(|| SeqLayer::new(config.seq, Instant::now()));
            let mut io = Io {
                tcp,
                seq,
                raw: BytesMut::new(),
                plain: BytesMut::new(),
                out: BytesMut::new(),
                limits: config.limits,
            };
            let body = Body::Frame(handshake::cipher_model_request(handshake::PLATFORM_LINUX64));
            let mut f = Vec::new();
            let payload = frame::request_payload(handshake::CIPHER_MODEL, &body);
            frame::encode_request(&mut f, FrameKind::Stream, &payload, config.hash);
            io.send(&f).await?;
            let reply = io.result().await?;
            let model = CipherModel::from_dfe(&Dfe::decode(&reply, config.limits.max_payload as u64)?)?;
            Ok::<_, CompatClientError>((io, model))
        };
        let (io, model) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| CompatClientError::Timeout(timeout))??;
        Ok(CompatClient { io: Mutex::new(io), model, config })
    }

    /// The server's handshake answer (its id for this connection, its limits).
    pub fn cipher_model(&self) -> &CipherModel {
        &self.model
    }

    async fn request(
        &self,
        kind: FrameKind,
        command: &str,
        body: &Body,
    ) -> Result<Option<bytes::Bytes>, CompatClientError> {
        let mut f = Vec::new();
        frame::encode_request(&mut f, kind, &frame::request_payload(command, body), self.config.hash);
        let mut io = self.io.lock().await;
        io.send(&f).await?;
        if kind.is_direct() {
            io.drain().await?;
            return Ok(None);
        }
        // A result that does not come leaves the connection unusable (results carry no ids).
        self.timed(io.result()).await.map(Some)
    }

    /// Calls a console command: text in, text out.
    pub async fn call_console(&self, command: &str, text: &str) -> Result<String, CompatClientError> {
        let r =
            self.request(FrameKind::Console, command, &Body::Text(text.into())).await?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&r).into_owned())
    }

    /// Calls a stream command: DataFrameEngine in, DataFrameEngine out.
    pub async fn call_stream(&self, command: &str, frame: Dfe) -> Result<Dfe, CompatClientError> {
        let r = self.request(FrameKind::Stream, command, &Body::Frame(frame)).await?.unwrap_or_default();
        if r.is_empty() {
            return Ok(Dfe::new());
        }
        Ok(Dfe::decode(&r, self.config.limits.max_payload as u64)?)
    }

    /// Sends a direct console command (no result).
    pub async fn send_direct_console(&self, command: &str, text: &str) -> Result<(), CompatClientError> {
        self.request(FrameKind::DirectConsole, command, &Body::Text(text.into())).await.map(drop)
    }

    /// Sends a direct stream command (no result).
    pub async fn send_direct_stream(&self, command: &str, frame: Dfe) -> Result<(), CompatClientError> {
        self.request(FrameKind::DirectStream, command, &Body::Frame(frame)).await.map(drop)
    }

    /// `__@Wait`: returns once the server has handled everything sent before (the
    /// server's tick, in hex).
    pub async fn wait(&self) -> Result<String, CompatClientError> {
        self.call_console(handshake::WAIT, "").await
    }

    /// Sends `total` bytes from `reader` as a BigStream to `command`, in 1 MiB chunks,
    /// each after the server took the previous; returns when the server has them all.
    pub async fn send_big_stream(
        &self,
        command: &str,
        mut reader: impl AsyncRead + Unpin,
        total: u64,
    ) -> Result<(), CompatClientError> {
        let mut io = self.io.lock().await;
        let mut f = Vec::new();
        frame::encode_big_stream_head(&mut f, total as i64, command);
        let mut left = total;
        let mut chunk = vec![0; CHUNK_SIZE.min(total as usize)];
        loop {
            // The header goes with the first chunk (alone for an empty stream); after each
            // chunk the server says "next" (F6) or, after the last, "done" (F7).
            if left > 0 {
                let n = (left as usize).min(CHUNK_SIZE);
                reader.read_exact(&mut chunk[..n]).await?;
                self.put_chunk(&mut f, &chunk[..n]);
                left -= n as u64;
            }
            io.send(&f).await?;
            f.clear();
            match (self.timed(io.signal()).await?, left == 0) {
                (Decoded::DoneSignal, true) => return Ok(()),
                (Decoded::FragmentSignal, false) => {}
                (s, _) => {
                    return Err(
                        zs_compat::CompatError::malformed("BigStream", format!("unexpected {s:?}")).into()
                    )
                }
            }
        }
    }

    /// `f`, failed with `Timeout` if it takes longer than the configured timeout.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, CompatClientError>>,
    ) -> Result<T, CompatClientError> {
        let t = self.config.timeout;
        tokio::time::timeout(t, f).await.map_err(|_| CompatClientError::Timeout(t))?
    }

    fn put_chunk(&self, f: &mut Vec<u8>, data: &[u8]) {
        if self.config.compress {
            let packed = zs_compat::compress::parallel_compress(data);
            frame::encode_chunk_head(f, packed.len() as u32, true);
            f.extend_from_slice(&packed);
        } else {
            frame::encode_chunk_head(f, data.len() as u32, false);
            f.extend_from_slice(data);
        }
    }

    /// Waits for the next direct command the server pushes (on a connection the client
    /// makes no requests on, as the original's receive tunnels are): its name and body.
    pub async fn recv_direct(&self) -> Result<(String, Body), CompatClientError> {
        let mut io = self.io.lock().await;
        loop {
            if let Some((f, n)) = frame::decode(&io.plain, &io.limits)? {
                io.plain.advance(n);
                let Decoded::Request(r) = f else {
                    return Err(zs_compat::CompatError::malformed("push", "not a direct command").into());
                };
                if !r.kind.is_direct() {
                    return Err(zs_compat::CompatError::malformed("push", "the server made a request").into());
                }
                let limit = self.config.limits.max_payload as u64;
                return Ok(frame::parse_request_payload(r.kind, &r.payload, limit)?);
            }
            io.fill().await?;
        }
    }

    /// Sends one CompleteBuffer to `command` (no answer; it is in order with the rest).
    pub async fn send_complete_buffer(&self, command: &str, data: &[u8]) -> Result<(), CompatClientError> {
        let mut f = Vec::with_capacity(data.len() + 64);
        if self.config.compress && data.len() > 1024 {
            let packed = zs_compat::compress::parallel_compress(data);
            frame::encode_complete_buffer_head(&mut f, data.len() as u32, packed.len() as u32, command);
            f.extend_from_slice(&packed);
        } else {
            frame::encode_complete_buffer_head(&mut f, data.len() as u32, 0, command);
            f.extend_from_slice(data);
        }
        let mut io = self.io.lock().await;
        io.send(&f).await?;
        io.drain().await
    }
}
