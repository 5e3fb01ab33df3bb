//! The push service's commands: console commands with JSON in and out (PROTOCOL §14).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use zs::wire::ErrorCode;
use zs::{HandlerError, Identity, Peer, Router, Text};

use super::{BrokerError, Delivery, Inner, Message, Refusal, SendPolicy, SendReport};
use crate::json::{err, request};

/// Longest topic name, in bytes.
pub const MAX_TOPIC: usize = 128;
/// Most messages one `inbox.list` returns.
pub const MAX_LIST: usize = 1_000;
/// Most sequence numbers one `inbox.ack` takes.
pub const MAX_ACK: usize = 10_000;

/// Registers every command of the service.
pub(crate) fn register(inner: Arc<Inner>, router: &mut Router) {
    macro_rules! command {
        ($name:expr, $f:ident) => {
            crate::json::json_command!(router, inner, $name, $f).requires_login()
        };
    }
    command!("push.send", send);
    command!("push.online", online);
    command!("push.subscribe", subscribe);
    command!("push.unsubscribe", unsubscribe);
    command!("push.publish", publish);
    command!("push.broadcast", broadcast);
    command!("push.presence", presence);
    command!("push.stats", stats).requires_role("admin");
    command!("inbox.list", list);
    command!("inbox.ack", ack);
}

fn internal(why: impl std::fmt::Display) -> HandlerError {
    err(ErrorCode::Application, why.to_string())
}

fn me(peer: &Peer) -> Result<Arc<Identity>, HandlerError> {
    peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "log in first"))
}

/// A topic name: 1 to 128 bytes of letters, digits and `._-:/`.
pub(crate) fn check_topic(topic: &str) -> Result<(), HandlerError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(err(
            ErrorCode::InvalidArgument,
            format!("a topic is 1 to {MAX_TOPIC} letters, digits or ._-:/"),
        )),
    }
}

/// A command name to deliver: what a router accepts.
fn check_command(command: &str) -> Result<(), HandlerError> {
    let ok = !command.is_empty() && command.len() <= 255 && !command.bytes().any(|b| b.is_ascii_control());
    match ok {
        true => Ok(()),
        false => {
            Err(err(ErrorCode::InvalidArgument, "a command name is 1 to 255 bytes, no control characters"))
        }
    }
}

/// Whether `who` may send to users (and broadcast) under the send policy now.
fn may_send(inner: &Inner, who: &Identity, what: &str) -> Result<(), HandlerError> {
    match inner.send_policy.get() == SendPolicy::Privileged && !who.has_role("admin") && !who.has_role("push")
    {
        true => Err(err(ErrorCode::Forbidden, format!("{what} needs the role admin or push"))),
        false => Ok(()),
    }
}

/// A published or broadcast text within the message size limit.
fn check_size(inner: &Inner, text: &str) -> Result<(), HandlerError> {
    match text.len() > inner.config.max_message_bytes {
        true => Err(err(
            ErrorCode::TooLarge,
            format!("a message is at most {} bytes", inner.config.max_message_bytes),
        )),
        false => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    user: String,
    command: String,
    text: String,
    id: Option<String>,
    /// Seconds the message waits in the inbox.
    ttl: Option<f64>,
    /// Store it when the user is offline (default true).
    store: Option<bool>,
}

async fn send(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: SendRequest = request(&text)?;
    let who = me(peer)?;
    may_send(inner, &who, "sending to users")?;
    let user = crate::accounts::normalise_name(&req.user).map_err(|e| err(ErrorCode::InvalidArgument, e))?;
    check_command(&req.command)?;
    if req.id.as_ref().is_some_and(|id| id.is_empty() || id.len() > 128) {
        return Err(err(ErrorCode::InvalidArgument, "a message id is 1 to 128 bytes"));
    }
    let ttl = match req.ttl {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(err(ErrorCode::InvalidArgument, "ttl is a positive number of seconds"))
        }
        Some(t) => Some(Duration::from_secs_f64(t.min(1e9))),
        None => None,
    };
    let message = Message {
        command: req.command,
        text: req.text,
        id: req.id,
        ttl,
        store: req.store.unwrap_or(true),
        from: Some(who.user.clone()),
    };
    let mut report = SendReport { live: 0, stored: None, duplicate: false, refused: None };
    inner.try_send(&user, message, &mut report).await.map_err(|r| match r {
        Refusal::TooLarge(m) => err(ErrorCode::TooLarge, m),
        Refusal::UnknownUser(m) => err(ErrorCode::NotFound, m),
        Refusal::Full(m) => err(ErrorCode::RateLimited, m),
        Refusal::Failed(m) => internal(m),
    })?;
    serde_json::to_value(&report).map_err(internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnlineRequest {
    users: Vec<String>,
}

async fn online(inner: &Arc<Inner>, _peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: OnlineRequest = request(&text)?;
    if req.users.len() > 1_000 {
        return Err(err(ErrorCode::InvalidArgument, "at most 1,000 users at once"));
    }
    let mut out = serde_json::Map::new();
    for u in req.users {
        let n = inner.broker.online(&u).await;
        out.insert(u, json!(n));
    }
    Ok(json!({ "users": out }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicRequest {
    topic: String,
    /// Send this connection the topic's presence events.
    presence: Option<bool>,
}

fn limit_error(e: BrokerError) -> HandlerError {
    match e {
        BrokerError::Limit(why) => err(ErrorCode::RateLimited, why),
        BrokerError::Unavailable(why) => err(ErrorCode::Overloaded, why),
    }
}

async fn subscribe(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: TopicRequest = request(&text)?;
    check_topic(&req.topic)?;
    let who = me(peer)?;
    if !inner.config.topic_policy.can_subscribe(&who, &req.topic) {
        return Err(err(ErrorCode::Forbidden, format!("{} may not subscribe to {}", who.user, req.topic)));
    }
    let n =
        inner.broker.subscribe(&req.topic, peer, req.presence.unwrap_or(false)).await.map_err(limit_error)?;
    Ok(json!({ "topic": req.topic, "connections": n }))
}

async fn unsubscribe(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: TopicRequest = request(&text)?;
    check_topic(&req.topic)?;
    let was = inner.broker.unsubscribe(&req.topic, peer).await;
    Ok(json!({ "topic": req.topic, "was_subscribed": was }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    command: String,
    text: String,
}

async fn publish(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: PublishRequest = request(&text)?;
    check_topic(&req.topic)?;
    check_command(&req.command)?;
    let who = me(peer)?;
    if !inner.config.topic_policy.can_publish(&who, &req.topic) {
        return Err(err(ErrorCode::Forbidden, format!("{} may not publish to {}", who.user, req.topic)));
    }
    check_size(inner, &req.text)?;
    let delivery = Delivery { command: req.command, text: req.text.into() };
    let n = inner.broker.publish(&req.topic, &delivery).await.map_err(limit_error)?;
    Ok(json!({ "delivered": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    command: String,
    text: String,
}

/// To every logged-in connection (every node's): allowed to whoever may send to users.
async fn broadcast(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: BroadcastRequest = request(&text)?;
    check_command(&req.command)?;
    let who = me(peer)?;
    may_send(inner, &who, "broadcasting")?;
    check_size(inner, &req.text)?;
    let delivery = Delivery { command: req.command, text: req.text.into() };
    let n = inner.broker.broadcast(&delivery).await.map_err(limit_error)?;
    Ok(json!({ "delivered": n }))
}

async fn presence(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: TopicRequest = request(&text)?;
    check_topic(&req.topic)?;
    let who = me(peer)?;
    if !inner.config.topic_policy.can_subscribe(&who, &req.topic) {
        return Err(err(ErrorCode::Forbidden, format!("{} may not see {}", who.user, req.topic)));
    }
    serde_json::to_value(inner.broker.presence(&req.topic).await).map_err(internal)
}

async fn stats(inner: &Arc<Inner>, _peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let c = inner.inbox.counters();
    Ok(json!({
        "stored": c.stored.load(Relaxed),
        "duplicates": c.duplicates.load(Relaxed),
        "dropped_oldest": c.dropped_oldest.load(Relaxed),
        "refused": c.refused.load(Relaxed),
        "expired": c.expired.load(Relaxed),
        "acked": c.acked.load(Relaxed),
        "commits": c.commits.load(Relaxed),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: ListRequest = request(&text)?;
    let who = me(peer)?;
    let limit = req.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let after = req.after.unwrap_or(0);
    let (messages, more) = inner.inbox.list(&who.user, after, limit).await.map_err(internal)?;
    Ok(json!({ "messages": messages, "more": more }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    seqs: Vec<u64>,
}

async fn ack(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: AckRequest = request(&text)?;
    if req.seqs.len() > MAX_ACK {
        return Err(err(ErrorCode::InvalidArgument, format!("at most {MAX_ACK} at once")));
    }
    let who = me(peer)?;
    let removed = inner.inbox.ack(&who.user, req.seqs).await.map_err(|why| match why.contains("busy") {
        true => err(ErrorCode::RateLimited, why),
        false => internal(why),
    })?;
    Ok(json!({ "removed": removed }))
}

/// Decodes `text` as each push and inbox command's request (the fuzz target's body): never panics.
pub fn decode_any(text: &str) {
    let t = Text::from(text.to_owned());
    let _ = request::<SendRequest>(&t);
    let _ = request::<OnlineRequest>(&t);
    let _ = request::<TopicRequest>(&t).map(|r| check_topic(&r.topic));
    let _ = request::<PublishRequest>(&t).map(|r| (check_topic(&r.topic), check_command(&r.command)));
    let _ = request::<ListRequest>(&t);
    let _ = request::<BroadcastRequest>(&t).map(|r| check_command(&r.command));
    let _ = request::<AckRequest>(&t);
}
