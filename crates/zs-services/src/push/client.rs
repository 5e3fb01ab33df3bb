//! The push service from a client: send to a user, topics, presence, and the inbox
//! ([`drain`] runs a handler over every waiting message in order and acknowledges each
//! one it accepted). Live pushes arrive on the client's router under their own command
//! names; presence events under [`PRESENCE_EVENT`](super::PRESENCE_EVENT); a login with
//! messages waiting gets [`INBOX_WAITING`](super::INBOX_WAITING).

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use zs::{CallError, Peer};

use super::{InboxMessage, Presence, SendReport};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The server refused or failed (its code says why).
    #[error("{0}")]
    Call(#[from] CallError),
    /// The server's answer was not what this client expects.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

async fn call(peer: &Peer, command: &str, request: Value) -> Result<Value, PushError> {
    let reply = peer.call_console(command, request.to_string()).await?;
    serde_json::from_str(reply.as_str()).map_err(|e| PushError::Protocol(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, PushError> {
    serde_json::from_value(v).map_err(|e| PushError::Protocol(e.to_string()))
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// An id for de-duplication (a retry with the same id is stored once).
    pub id: Option<String>,
    /// How long it waits in the inbox.
    pub ttl: Option<Duration>,
    /// Store it when the user is offline (default true).
    pub store: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { id: None, ttl: None, store: true }
    }
}

/// Sends `command` with `text` to `user` (needs the role `admin` or `push` by default).
pub async fn send(
    peer: &Peer,
    user: &str,
    command: &str,
    text: &str,
    opts: SendOptions,
) -> Result<SendReport, PushError> {
    let mut req = json!({ "user": user, "command": command, "text": text, "store": opts.store });
    if let Some(id) = opts.id {
        req["id"] = json!(id);
    }
    if let Some(ttl) = opts.ttl {
        req["ttl"] = json!(ttl.as_secs_f64());
    }
    decode(call(peer, "push.send", req).await?)
}

/// Subscribes to `topic` (with presence events when `presence`); the topic's connections.
pub async fn subscribe(peer: &Peer, topic: &str, presence: bool) -> Result<usize, PushError> {
    let v = call(peer, "push.subscribe", json!({ "topic": topic, "presence": presence })).await?;
    decode(v.get("connections").cloned().unwrap_or(Value::Null))
}

/// Unsubscribes from `topic`; whether this connection was subscribed.
pub async fn unsubscribe(peer: &Peer, topic: &str) -> Result<bool, PushError> {
    let v = call(peer, "push.unsubscribe", json!({ "topic": topic })).await?;
    decode(v.get("was_subscribed").cloned().unwrap_or(Value::Null))
}

/// Publishes `command` with `text` to `topic`; how many connections got it.
pub async fn publish(peer: &Peer, topic: &str, command: &str, text: &str) -> Result<usize, PushError> {
    let v = call(peer, "push.publish", json!({ "topic": topic, "command": command, "text": text })).await?;
    decode(v.get("delivered").cloned().unwrap_or(Value::Null))
}

/// Sends `command` with `text` to every logged-in connection (of every node in a cluster);
/// how many got it.
pub async fn broadcast(peer: &Peer, command: &str, text: &str) -> Result<usize, PushError> {
    let v = call(peer, "push.broadcast", json!({ "command": command, "text": text })).await?;
    decode(v.get("delivered").cloned().unwrap_or(Value::Null))
}

/// Who is in `topic`.
pub async fn presence(peer: &Peer, topic: &str) -> Result<Presence, PushError> {
    #[derive(Deserialize)]
    struct P {
        connections: usize,
        count: usize,
        users: Option<Vec<String>>,
    }
    let p: P = decode(call(peer, "push.presence", json!({ "topic": topic })).await?)?;
    Ok(Presence { connections: p.connections, count: p.count, users: p.users })
}

/// Connections each of `users` holds.
pub async fn online(peer: &Peer, users: &[&str]) -> Result<Vec<(String, usize)>, PushError> {
    let v = call(peer, "push.online", json!({ "users": users })).await?;
    let map: std::collections::BTreeMap<String, usize> =
        decode(v.get("users").cloned().unwrap_or(Value::Null))?;
    Ok(users.iter().map(|u| (u.to_string(), map.get(*u).copied().unwrap_or(0))).collect())
}

/// Up to `limit` waiting messages after `after`, in order, and whether more follow.
pub async fn list(peer: &Peer, after: u64, limit: usize) -> Result<(Vec<InboxMessage>, bool), PushError> {
    #[derive(Deserialize)]
    struct L {
        messages: Vec<InboxMessage>,
        more: bool,
    }
    let l: L = decode(call(peer, "inbox.list", json!({ "after": after, "limit": limit })).await?)?;
    Ok((l.messages, l.more))
}

/// Acknowledges (removes) messages; how many were there.
pub async fn ack(peer: &Peer, seqs: &[u64]) -> Result<u64, PushError> {
    let v = call(peer, "inbox.ack", json!({ "seqs": seqs })).await?;
    decode(v.get("removed").cloned().unwrap_or(Value::Null))
}

/// Runs `handle` over every waiting message in order, acknowledging those it returns
/// `true` for (a page at a time); stops at the first `false`, which stays in the inbox
/// with everything after it. How many were handled.
pub async fn drain<F, Fut>(peer: &Peer, mut handle: F) -> Result<usize, PushError>
where
    F: FnMut(InboxMessage) -> Fut,
    Fut: Future<Output = bool>,
{
    let (mut after, mut handled) = (0, 0);
    loop {
        let (page, more) = list(peer, after, 100).await?;
        let mut done = Vec::with_capacity(page.len());
        for m in page {
            let seq = m.seq;
            if !handle(m).await {
                if !done.is_empty() {
                    ack(peer, &done).await?;
                }
                return Ok(handled);
            }
            done.push(seq);
            handled += 1;
            after = seq;
        }
        if !done.is_empty() {
            ack(peer, &done).await?;
        }
        if !more {
            return Ok(handled);
        }
    }
}
