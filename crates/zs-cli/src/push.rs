//! `zs push` (send a command to a user: live to its connections, else into its inbox) and
//! `zs inbox` (list, and acknowledge, the logged-in user's waiting messages).

use std::time::Duration;

use clap::Args;
use zs_services::push::client::{self, SendOptions};

/// `zs push USER COMMAND TEXT`.
#[derive(Args)]
pub struct PushArgs {
    /// The account to send to.
    #[arg(value_name = "USER")]
    to: String,
    /// The command its client runs.
    command: String,
    /// The payload.
    text: String,
    /// An id: a retry with the same id is stored once.
    #[arg(long)]
    id: Option<String>,
    /// Seconds the message waits in the inbox (default: the server's, 7 days).
    #[arg(long, value_parser = crate::seconds)]
    ttl: Option<Duration>,
    /// Deliver live only: do not store it when the user is offline.
    #[arg(long)]
    no_store: bool,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

/// `zs inbox`.
#[derive(Args)]
pub struct InboxArgs {
    /// Acknowledge (remove) the messages printed.
    #[arg(long)]
    ack: bool,
    /// At most this many messages.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

pub fn push(args: PushArgs) -> Result<(), String> {
    crate::runtime()?.block_on(async {
        let c = args.connect.connect().await?;
        let opts = SendOptions { id: args.id, ttl: args.ttl, store: !args.no_store };
        let r = client::send(c.peer(), &args.to, &args.command, &args.text, opts)
            .await
            .map_err(|e| e.to_string())?;
        match (r.live, r.stored, r.duplicate) {
            (0, Some(seq), false) => println!("{} is offline: stored in its inbox (#{seq})", args.to),
            (0, Some(seq), true) => {
                println!("already in the inbox of {} (#{seq}): not stored again", args.to)
            }
            (0, None, _) => println!("{} is offline: not stored", args.to),
            (n, _, _) => println!("delivered live to {n} connection(s) of {}", args.to),
        }
        Ok(())
    })
}

pub fn inbox(args: InboxArgs) -> Result<(), String> {
    crate::runtime()?.block_on(async {
        if args.connect.user.is_none() {
            return Err("the inbox is an account's: give --user NAME (or set ZS_USER)".into());
        }
        let c = args.connect.connect().await?;
        let e = |e: client::PushError| e.to_string();
        let (messages, more) = client::list(c.peer(), 0, args.limit.clamp(1, 1000)).await.map_err(e)?;
        for m in &messages {
            let from = m.from.as_deref().unwrap_or("-");
            println!("#{} {} from {from} [{}]: {}", m.seq, m.command, m.id, m.text);
        }
        if more {
            println!("(more waiting)");
        }
        if args.ack && !messages.is_empty() {
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
            let n = client::ack(c.peer(), &seqs).await.map_err(e)?;
            println!("acknowledged {n}");
        }
        Ok(())
    })
}
