//! Deliveries to users' connections on other nodes, batched per node: one task per node
//! sends what is queued as one NATS request (`zs.c.user.NODE`: a JSON array of deliveries,
//! answered with an array of counts) and, while it waits for the answer, the next batch
//! gathers. The first delivery goes at once; under load a round trip carries hundreds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Carried;

/// Deliveries queued for one node at most; a sender waits for room beyond. With messages
/// of at most 64 KiB (the push service's default) a queue holds 64 MiB at most.
pub const QUEUE: usize = 1024;
/// Deliveries in one request at most...
const BATCH: usize = 256;
/// ...and bytes of their texts (NATS takes 1 MiB per message by default).
const BATCH_BYTES: usize = 512 << 10;

struct Pending {
    carried: Carried,
    done: oneshot::Sender<usize>,
}

/// The queues to other nodes.
pub(crate) struct Deliverer {
    nats: async_nats::Client,
    timeout: Duration,
    queues: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

impl Deliverer {
    pub(crate) fn new(nats: async_nats::Client, timeout: Duration) -> Deliverer {
        Deliverer { nats, timeout, queues: Mutex::default() }
    }

    /// Delivers `carried` to its user's connections on `node`; how many got it (0 if the
    /// node did not answer within the timeout).
    pub(crate) async fn deliver(&self, node: &str, carried: Carried) -> usize {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let q = queues.entry(node.to_owned()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(send_batches(self.nats.clone(), format!("zs.c.user.{node}"), rx, self.timeout));
                tx
            });
            q.clone()
        };
        let (done, answer) = oneshot::channel();
        if queue.send(Pending { carried, done }).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    /// A node has gone: its queue ends once what is in it has been answered.
    pub(crate) fn forget(&self, node: &str) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
    }
}

async fn send_batches(
    nats: async_nats::Client,
    subject: String,
    mut rx: mpsc::Receiver<Pending>,
    timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.carried.text.len();
        let mut batch = vec![first];
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.carried.text.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let carried: Vec<&Carried> = batch.iter().map(|p| &p.carried).collect();
        let counts: Vec<usize> = match serde_json::to_vec(&carried) {
            Ok(body) => {
                let request = async_nats::Request::new().payload(body.into()).timeout(Some(timeout));
                match nats.send_request(subject.clone(), request).await {
                    Ok(m) => serde_json::from_slice(&m.payload).unwrap_or_default(),
                    Err(e) => {
                        tracing::debug!("cluster: {subject}: {e}");
                        Vec::new()
                    }
                }
            }
            Err(_) => Vec::new(),
        };
        for (i, p) in batch.into_iter().enumerate() {
            let _ = p.done.send(counts.get(i).copied().unwrap_or(0));
        }
    }
}
