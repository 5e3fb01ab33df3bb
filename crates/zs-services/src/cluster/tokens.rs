//! Login tokens every node of a cluster accepts: `zsc_` + the claims (user, roles, issued,
//! expires; base64url JSON) + `.` + their BLAKE3 keyed hash under the cluster's token key.
//! The key is made once, by the first node, in the cluster's JetStream stream `ZS_CLUSTER`
//! (subject `zs.cluster.token_key`, written only if nothing is there yet) and read from
//! there by the others; revocations (per user: every token issued until then) are kept in
//! the same stream, the last one per user.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use base64::Engine;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use zs::Identity;

use crate::accounts::TokenAuthority;

/// The cluster's stream of settings.
pub const STREAM: &str = "ZS_CLUSTER";
const KEY_SUBJECT: &str = "zs.cluster.token_key";
const PREFIX: &str = "zsc_";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a cluster token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user.
    u: String,
    /// Its roles.
    r: Vec<String>,
    /// Issued, milliseconds since the epoch (a revocation at or after it voids it).
    i: u64,
    /// Expires, seconds since the epoch.
    e: u64,
}

/// Tokens signed with the cluster's key.
#[derive(Clone)]
pub struct ClusterTokens {
    key: [u8; 32],
    js: jetstream::Context,
    stream: stream::Stream,
}

fn revoked_subject(user: &str) -> String {
    format!("zs.cluster.revoked.{}", super::subject_token(user))
}

/// The last message on `subject`, if there is one.
async fn last(stream: &stream::Stream, subject: &str) -> Result<Option<bytes::Bytes>, String> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(m.payload)),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl ClusterTokens {
    /// Opens the cluster's stream and reads its token key, making both if this node is the
    /// first.
    pub async fn open(nats: async_nats::Client) -> Result<ClusterTokens, String> {
        let js = jetstream::new(nats);
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec!["zs.cluster.>".into()],
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        };
        let stream =
            js.get_or_create_stream(config).await.map_err(|e| format!("the cluster's stream: {e}"))?;
        if last(&stream, KEY_SUBJECT).await?.is_none() {
            let mut fresh = [0u8; 32];
            getrandom::fill(&mut fresh).expect("the operating system provides random bytes");
            // Written only if no key is there: of nodes starting together, one key wins.
            let mut only_first = async_nats::HeaderMap::new();
            only_first.insert("Nats-Expected-Last-Subject-Sequence", "0");
            if let Ok(ack) = js.publish_with_headers(KEY_SUBJECT, only_first, fresh.to_vec().into()).await {
                let _ = ack.await;
            }
        }
        let key = last(&stream, KEY_SUBJECT).await?.ok_or("the cluster's token key is not there")?;
        let key =
            key.as_ref().try_into().map_err(|_| "the cluster's token key is not 32 bytes".to_string())?;
        Ok(ClusterTokens { key, js, stream })
    }

    fn claims(&self, token: &str) -> Option<Result<Claims, String>> {
        check(&self.key, token)
    }
}

/// A token for `claims`, signed with `key`.
fn sign(key: &[u8; 32], claims: &Claims) -> String {
    let claims = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mac = B64.encode(blake3::keyed_hash(key, claims.as_bytes()).as_bytes());
    format!("{PREFIX}{claims}.{mac}")
}

/// The claims of `token` if its signature under `key` holds; `None` if it is no cluster
/// token at all.
fn check(key: &[u8; 32], token: &str) -> Option<Result<Claims, String>> {
    let body = token.strip_prefix(PREFIX)?;
    let forged = || Err("not a token of this cluster".to_string());
    let Some((claims, mac)) = body.split_once('.') else { return Some(forged()) };
    let Ok(mac) = B64.decode(mac) else { return Some(forged()) };
    let Ok(mac) = <[u8; 32]>::try_from(mac.as_slice()) else { return Some(forged()) };
    // blake3::Hash compares in constant time.
    if blake3::Hash::from_bytes(mac) != blake3::keyed_hash(key, claims.as_bytes()) {
        return Some(forged());
    }
    let claims = B64.decode(claims).ok().and_then(|c| serde_json::from_slice::<Claims>(&c).ok());
    Some(claims.ok_or_else(|| "a cluster token that does not decode".to_string()))
}

/// Checks `data` (made UTF-8) as a token, under a fixed key (the fuzz target's body): never
/// panics, and only a token signed with the key passes.
pub(crate) fn decode_any(data: &[u8]) {
    let key = [7u8; 32];
    let text = String::from_utf8_lossy(data);
    if let Some(Ok(c)) = check(&key, &text) {
        assert_eq!(check(&key, &sign(&key, &c)).map(|r| r.is_ok()), Some(true));
    }
}

impl TokenAuthority for ClusterTokens {
    fn issue(&self, who: &Identity, ttl: Duration) -> BoxFuture<'static, Result<(String, u64), String>> {
        let now = crate::push::now_ms();
        let expires = now / 1000 + ttl.as_secs();
        let claims = Claims { u: who.user.clone(), r: who.roles.to_vec(), i: now, e: expires };
        let token = sign(&self.key, &claims);
        Box::pin(async move { Ok((token, expires)) })
    }

    fn verify(&self, token: &str) -> BoxFuture<'static, Option<Result<Identity, String>>> {
        let claims = self.claims(token);
        let stream = self.stream.clone();
        Box::pin(async move {
            let claims = match claims? {
                Ok(c) => c,
                Err(why) => return Some(Err(why)),
            };
            if claims.e <= crate::push::now_ms() / 1000 {
                return Some(Err("expired token".into()));
            }
            match last(&stream, &revoked_subject(&claims.u)).await {
                Ok(None) => {}
                Ok(Some(at)) => {
                    let at: u64 =
                        std::str::from_utf8(&at).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
                    if claims.i <= at {
                        return Some(Err("revoked token".into()));
                    }
                }
                Err(e) => return Some(Err(format!("cannot check revocations: {e}"))),
            }
            Some(Ok(Identity::new(claims.u, claims.r)))
        })
    }

    fn revoke_user(&self, user: &str) -> BoxFuture<'static, Result<(), String>> {
        let (js, subject) = (self.js.clone(), revoked_subject(user));
        Box::pin(async move {
            let now = crate::push::now_ms().to_string();
            let ack = js
                .publish(subject, now.into_bytes().into())
                .await
                .map_err(|e| format!("cannot revoke: {e}"))?;
            ack.await.map(|_| ()).map_err(|e| format!("cannot revoke: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_under_its_key_only_and_any_change_breaks_it() {
        let (key, other) = ([1u8; 32], [2u8; 32]);
        let claims = Claims { u: "alice".into(), r: vec!["user".into()], i: 5, e: 10 };
        let token = sign(&key, &claims);
        let back = check(&key, &token).unwrap().unwrap();
        assert_eq!((back.u.as_str(), back.e), ("alice", 10));
        assert!(check(&other, &token).unwrap().is_err(), "another cluster's key");
        assert!(check(&key, "zst_a store token").is_none(), "not a cluster token: the store decides");
        // Claims swapped for bob's under alice's signature.
        let bob = sign(&key, &Claims { u: "bob".into(), ..claims });
        let (bob_claims, _) = bob.trim_start_matches(PREFIX).split_once('.').unwrap();
        let (_, alice_mac) = token.split_once('.').unwrap();
        let forged = format!("{PREFIX}{bob_claims}.{alice_mac}");
        assert_eq!(check(&key, &forged).unwrap().unwrap_err(), "not a token of this cluster");
        for bad in ["zsc_", "zsc_.", "zsc_x.y", "zsc_é.é"] {
            assert!(check(&key, bad).unwrap().is_err(), "{bad}");
        }
    }
}
