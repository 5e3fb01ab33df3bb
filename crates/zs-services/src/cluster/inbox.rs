//! The cluster's offline inbox: a JetStream stream on the NATS server (`ZS_INBOX`, file
//! storage), one subject per user. Every node stores into it and lists from it, so a user
//! finds its messages on whichever node it logs in to, and a node's death loses nothing
//! the stream acknowledged. Sequence numbers are the stream's.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;

use crate::push::{now_ms, InboxCounters, InboxMessage, InboxStore, Stored};

/// The stream's name.
pub const STREAM: &str = "ZS_INBOX";
/// How long a message id is remembered for de-duplication.
const DEDUPE_WINDOW: Duration = Duration::from_secs(3600);
/// Bytes of messages one listing returns at most (at least one message).
const LIST_BYTES: usize = 4 << 20;

/// Offline messages in a JetStream stream shared by the cluster's nodes.
pub struct JetStreamInbox {
    stream: stream::Stream,
    js: jetstream::Context,
    counters: InboxCounters,
    cap: AtomicU64,
}

/// A user's subject: the name in hex, as a subject token can hold no `.`, `*` or `>`.
fn subject(user: &str) -> String {
    format!("zs.inbox.{}", super::subject_token(user))
}

fn e<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl JetStreamInbox {
    /// Opens (or makes) the stream: a user holds at most `cap` messages (the oldest give
    /// way), none older than `max_ttl`.
    pub async fn open(
        nats: async_nats::Client,
        cap: u64,
        max_ttl: Duration,
    ) -> Result<JetStreamInbox, String> {
        let js = jetstream::new(nats);
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec!["zs.inbox.*".into()],
            storage: stream::StorageType::File,
            max_messages_per_subject: cap.max(1) as i64,
            discard: stream::DiscardPolicy::Old,
            max_age: max_ttl,
            duplicate_window: DEDUPE_WINDOW.min(max_ttl),
            allow_direct: true,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(|err| {
            format!("cannot open the cluster inbox (is JetStream on, `nats-server -js`?): {err}")
        })?;
        Ok(JetStreamInbox { stream, js, counters: InboxCounters::default(), cap: AtomicU64::new(cap.max(1)) })
    }

    async fn store_now(&self, user: &str, message: InboxMessage) -> Result<Stored, String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}/{}", subject(user), message.id).as_str());
        let body = serde_json::to_vec(&message).map_err(e)?;
        let ack = self.js.publish_with_headers(subject(user), headers, body.into()).await.map_err(e)?;
        let ack = ack.await.map_err(e)?;
        match ack.duplicate {
            true => {
                self.counters.duplicates.fetch_add(1, Relaxed);
                Ok(Stored::Duplicate(ack.sequence))
            }
            false => {
                self.counters.stored.fetch_add(1, Relaxed);
                Ok(Stored::Stored(ack.sequence))
            }
        }
    }

    async fn list_now(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<InboxMessage>, bool), String> {
        let (now, subject) = (now_ms(), subject(user));
        let (mut out, mut bytes, mut next) = (Vec::new(), 0, after.saturating_add(1));
        loop {
            let m = match self.stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await {
                Ok(m) => m,
                Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => return Ok((out, false)),
                Err(err) => return Err(e(err)),
            };
            next = m.sequence + 1;
            let Ok(mut message) = serde_json::from_slice::<InboxMessage>(&m.payload) else { continue };
            if message.expires_at <= now {
                continue;
            }
            if out.len() == limit || (bytes >= LIST_BYTES && !out.is_empty()) {
                return Ok((out, true));
            }
            bytes += message.text.len() + message.command.len() + message.id.len();
            message.seq = m.sequence;
            out.push(message);
        }
    }

    async fn ack_now(&self, user: &str, seqs: Vec<u64>) -> Result<u64, String> {
        let subject = subject(user);
        let mut removed = 0;
        for seq in seqs {
            // Only the user's own messages: a sequence number of another's is not there.
            let Ok(m) = self.stream.get_raw_message(seq).await else { continue };
            if m.subject.as_str() != subject {
                continue;
            }
            if self.stream.delete_message(seq).await.unwrap_or(false) {
                removed += 1;
            }
        }
        self.counters.acked.fetch_add(removed, Relaxed);
        Ok(removed)
    }

    async fn count_now(&self, user: &str) -> Result<u64, String> {
        let stream = self.stream.clone();
        let counts = stream.info_with_subjects(subject(user)).await.map_err(e)?;
        let counts: Vec<(String, usize)> = counts.try_collect().await.map_err(e)?;
        Ok(counts.into_iter().map(|(_, n)| n as u64).sum())
    }
}

impl InboxStore for JetStreamInbox {
    fn store<'a>(&'a self, user: &'a str, message: InboxMessage) -> BoxFuture<'a, Result<Stored, String>> {
        Box::pin(self.store_now(user, message))
    }

    fn ack<'a>(&'a self, user: &'a str, seqs: Vec<u64>) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(self.ack_now(user, seqs))
    }

    fn list<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<InboxMessage>, bool), String>> {
        Box::pin(self.list_now(user, after, limit))
    }

    fn count<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(self.count_now(user))
    }

    fn counters(&self) -> &InboxCounters {
        &self.counters
    }

    /// Changes the stream's per-user limit (for every node: the stream is shared).
    fn set_cap(&self, cap: u64) {
        self.cap.store(cap.max(1), Relaxed);
        let (js, mut config) = (self.js.clone(), self.stream.cached_info().config.clone());
        config.max_messages_per_subject = cap.max(1) as i64;
        tokio::spawn(async move {
            if let Err(err) = js.update_stream(config).await {
                tracing::warn!("cluster inbox: cannot change the per-user limit: {err}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_hold_any_user_name_as_one_token() {
        assert_eq!(super::subject("a.b"), "zs.inbox.612e62");
        assert!(!super::subject("x*>é ").trim_start_matches("zs.inbox.").contains(['.', '*', '>', ' ']));
    }
}
