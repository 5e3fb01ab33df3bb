//! Opening and resuming sessions: the hello and answer after the secure handshake, the
//! server's check of a resume proof, and the client's reconnect loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use zs_wire::session::{Answer, Hello, Refusal};

use super::link::Role;
use super::{proof, random, Attach, Registry, SessionConfig, SessionLink, SessionShared};
use crate::secure::{self, ClientSecurity, RekeyPolicy, Secured, SecuredLink};
use crate::stats::Stats;
use crate::transport::{read_message, write_all, DialFn, Link};

/// What a server does with a connection whose client asked for a session.
pub(crate) enum Admitted {
    /// A new session: run a connection on it.
    New(Box<SessionLink>),
    /// The link went to the session it resumes; nothing more to do here.
    Resumed,
}

/// The server's side of the hello. `config` is `None` when the server keeps no sessions.
pub(crate) async fn accept(
    mut secured: Secured,
    config: Option<&SessionConfig>,
    registry: &Arc<Registry>,
    stats: &Arc<Stats>,
) -> io::Result<Admitted> {
    let (hello, leftover) = read_message(&mut secured.link, Hello::parse).await?;
    let Some(config) = config else {
        return refuse(secured, Refusal::Disabled, "this server does not keep sessions").await;
    };
    let channel = secured.channel.as_ref().expect("sessions run over secure channels only");
    match hello {
        Hello::New => {
            let shared = SessionShared::new(random(), random(), channel.remote_key);
            let keep_ms = config.keep_detached.as_millis().min(u32::MAX as u128) as u32;
            let mut answer = BytesMut::new();
            Answer::Accepted { id: shared.id, secret: shared.secret, keep_ms }.encode(&mut answer);
            write_all(&mut secured.link, &answer).await?;
            registry.insert(shared.clone());
            stats.bump(|s| &s.sessions_opened);
            let role = Role::Server { keep: config.keep_detached, registry: registry.clone() };
            let link = SessionLink::new(secured.link, shared, role, config, leftover, stats.clone())?;
            Ok(Admitted::New(Box::new(link)))
        }
        Hello::Resume { id, received, proof: claimed } => {
            let Some(shared) = registry.get(&id) else {
                let msg = "no such session: it expired or ended, or the server restarted";
                return refuse(secured, Refusal::Unknown, msg).await;
            };
            let expected = proof(&shared.secret, &id, received, &channel.binding);
            if expected != blake3::Hash::from(claimed) {
                stats.bump(|s| &s.sessions_refused);
                return refuse(secured, Refusal::BadProof, "wrong session proof").await;
            }
            if shared.client_key.is_some() && shared.client_key != channel.remote_key {
                stats.bump(|s| &s.sessions_refused);
                return refuse(secured, Refusal::BadProof, "the session belongs to another client key").await;
            }
            shared.offer(Attach::Link {
                link: secured.link,
                peer_received: received,
                leftover,
                answer: true,
            });
            Ok(Admitted::Resumed)
        }
    }
}

async fn refuse(secured: Secured, code: Refusal, message: &str) -> io::Result<Admitted> {
    let mut answer = BytesMut::new();
    Answer::Refused { code, message: message.into() }.encode(&mut answer);
    secure::say_and_close(secured.link, &answer).await;
    Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("session refused: {message}")))
}

/// Sends a client's hello and reads the server's answer (and what came after it).
async fn exchange(link: &mut SecuredLink, hello: Hello) -> io::Result<(Answer, BytesMut)> {
    let mut bytes = BytesMut::new();
    hello.encode(&mut bytes);
    write_all(link, &bytes).await?;
    read_message(link, Answer::parse).await
}

/// How a client reaches its server: what it dials with and how it secures the link.
#[derive(Clone)]
pub(crate) struct Reach {
    pub(crate) dial: DialFn,
    pub(crate) security: ClientSecurity,
    pub(crate) rekey: RekeyPolicy,
    /// How long dialing, handshake and hello may take.
    pub(crate) timeout: Duration,
}

/// What a client needs to resume its session.
struct Reconnect {
    addr: SocketAddr,
    reach: Reach,
    config: SessionConfig,
    stats: Arc<Stats>,
}

/// The client's side: connects, opens a session, and returns its link and what the
/// secure channel established.
pub(crate) async fn connect(
    addr: impl tokio::net::ToSocketAddrs,
    reach: Reach,
    config: &SessionConfig,
    stats: Arc<Stats>,
) -> io::Result<(SessionLink, Option<secure::ChannelInfo>)> {
    let timeout = reach.timeout;
    let mut secured =
        secure::connect(&reach.dial, addr, &reach.security, true, timeout, reach.rekey, stats.clone())
            .await?;
    let (answer, leftover) =
        tokio::time::timeout(timeout, exchange(&mut secured.link, Hello::New)).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "the server did not answer the session hello")
        })??;
    let (id, secret, keep_ms) = match answer {
        Answer::Accepted { id, secret, keep_ms } => (id, secret, keep_ms),
        other => return Err(unexpected(other)),
    };
    stats.bump(|s| &s.sessions_opened);
    let mut config = config.clone();
    // Trying longer than the server keeps the session is pointless.
    config.keep_detached = config.keep_detached.min(Duration::from_millis(keep_ms.into()));
    let reconnect = Arc::new(Reconnect {
        addr: secured.link.peer_addr()?,
        reach,
        config: config.clone(),
        stats: stats.clone(),
    });
    let shared = SessionShared::new(id, secret, None);
    let channel = secured.channel;
    let restart: super::link::Restart =
        Box::new(move |shared| drop(tokio::spawn(reconnect_loop(shared, reconnect.clone()))));
    let link = SessionLink::new(secured.link, shared, Role::Client(restart), &config, leftover, stats)?;
    Ok((link, channel))
}

fn unexpected(answer: Answer) -> io::Error {
    match answer {
        Answer::Refused { message, .. } => {
            io::Error::new(io::ErrorKind::ConnectionRefused, format!("session refused: {message}"))
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("unexpected session answer {other:?}")),
    }
}

/// Reconnects with jittered exponential backoff until the session resumes, the server
/// refuses it, the session ends, or the server's keep time has passed; offers the result
/// to the session.
async fn reconnect_loop(shared: Arc<SessionShared>, r: Arc<Reconnect>) {
    let deadline = Instant::now() + r.config.keep_detached;
    let mut delay = r.config.min_backoff;
    loop {
        if shared.ended() {
            return;
        }
        tokio::time::sleep(jitter(delay)).await;
        if shared.ended() {
            return;
        }
        match resume_once(&shared, &r).await {
            Ok(Ok(attach)) => return shared.offer(attach),
            Ok(Err(refused)) => {
                return shared.offer(Attach::Failed(format!("session could not resume: {refused}")))
            }
            // The server's identity no longer matches: trying again will not help.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return shared.offer(Attach::Failed(format!("session could not resume: {e}")));
            }
            Err(e) if Instant::now() >= deadline => {
                let why = format!("session could not resume within {:?}: {e}", r.config.keep_detached);
                return shared.offer(Attach::Failed(why));
            }
            Err(_) => {}
        }
        delay = (delay * 2).min(r.config.max_backoff);
    }
}

/// One attempt: connect, prove the session, read the server's count. `Ok(Err(why))` when
/// the server refused the session (no point in trying again).
async fn resume_once(shared: &SessionShared, r: &Reconnect) -> io::Result<Result<Attach, String>> {
    let attempt = async {
        let reach = &r.reach;
        let mut secured = secure::connect(
            &reach.dial,
            r.addr,
            &reach.security,
            true,
            reach.timeout,
            reach.rekey,
            r.stats.clone(),
        )
        .await?;
        let binding = secured.channel.as_ref().map(|c| c.binding).unwrap_or_default();
        let received = shared.received.load(std::sync::atomic::Ordering::Relaxed);
        let proof = *proof(&shared.secret, &shared.id, received, &binding).as_bytes();
        let hello = Hello::Resume { id: shared.id, received, proof };
        let (answer, leftover) = exchange(&mut secured.link, hello).await?;
        match answer {
            Answer::Resumed { received } => {
                Ok(Ok(Attach::Link { link: secured.link, peer_received: received, leftover, answer: false }))
            }
            Answer::Refused { message, .. } => Ok(Err(message)),
            other => Err(unexpected(other)),
        }
    };
    tokio::time::timeout(r.reach.timeout, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "resume timed out"))?
}

/// `d` scaled by a random factor between 0.5 and 1.5.
fn jitter(d: Duration) -> Duration {
    let r = u32::from_le_bytes(random());
    d.mul_f64(0.5 + f64::from(r) / f64::from(u32::MAX))
}
