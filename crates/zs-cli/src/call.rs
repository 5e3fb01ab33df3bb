//! `zs call`.

use std::time::Duration;

use clap::Args;
use zs::DataFrame;

#[derive(Args)]
pub struct CallArgs {
    /// Server address, e.g. 127.0.0.1:9818.
    addr: String,
    /// Command name.
    command: String,
    /// Text to send (empty if absent).
    #[arg(default_value = "")]
    text: String,
    /// Send TEXT as a one-string DataFrame (stream form) and print the reply as JSON.
    #[arg(long)]
    stream: bool,
    /// Send as a direct (one-way) command and expect no reply.
    #[arg(long)]
    direct: bool,
    /// ADDR is an original ZServer4D server: speak its protocol (console by default,
    /// `--stream` sends TEXT as a one-string DataFrameEngine, `--direct` one-way).
    #[arg(long)]
    compat: bool,
    /// Seconds to wait for the connection and for the reply.
    #[arg(long, default_value = "10", value_parser = crate::seconds)]
    timeout: Duration,
    /// Log in as this account before calling (its password from $ZS_PASSWORD, else a
    /// prompt).
    #[arg(long, env = "ZS_USER", value_name = "NAME")]
    user: Option<String>,
    #[command(flatten)]
    security: crate::security::ClientSecurityArgs,
}

pub fn run(args: CallArgs) -> Result<(), String> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        if args.compat {
            return call_compat(&args).await;
        }
        let client =
            crate::connect::connect(&args.addr, &args.security, args.timeout, zs::Router::new()).await?;
        if let Some(user) = &args.user {
            crate::connect::login(&client, user, args.timeout).await?;
        }
        let fail = |e: zs::CallError| format!("{} failed: {e}", args.command);
        match (args.stream, args.direct) {
            (false, false) => {
                let reply = client
                    .call_console_timeout(&args.command, args.text, args.timeout)
                    .await
                    .map_err(fail)?;
                println!("{reply}");
            }
            (true, false) => {
                let mut df = DataFrame::new();
                df.write_str(args.text);
                let reply =
                    client.call_stream_timeout(&args.command, df, args.timeout).await.map_err(fail)?;
                println!("{}", reply.to_json());
            }
            (false, true) => client.send_console(&args.command, args.text).await.map_err(fail)?,
            (true, true) => {
                let mut df = DataFrame::new();
                df.write_str(args.text);
                client.send_stream(&args.command, df).await.map_err(fail)?;
            }
        }
        if args.direct {
            // Closing politely flushes the one-way command before the process exits.
            client.close();
            let _ = tokio::time::timeout(args.timeout, client.closed()).await;
        }
        Ok(())
    })
}

/// `zs call --compat`: one command to a ZServer4D server.
async fn call_compat(args: &CallArgs) -> Result<(), String> {
    use zs::compat::{CompatClient, CompatClientConfig, Dfe, Element};
    let addr = tokio::net::lookup_host(args.addr.as_str())
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", args.addr))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", args.addr))?;
    let config = CompatClientConfig { timeout: args.timeout, ..CompatClientConfig::default() };
    let client = CompatClient::connect(addr, config)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    let fail = |e: zs::compat::CompatClientError| format!("{} failed: {e}", args.command);
    let frame = || Dfe { elements: vec![Element::String(args.text.clone())] };
    match (args.stream, args.direct) {
        (false, false) => println!("{}", client.call_console(&args.command, &args.text).await.map_err(fail)?),
        (true, false) => {
            let reply = client.call_stream(&args.command, frame()).await.map_err(fail)?;
            println!("{}", reply.to_dataframe().to_json());
        }
        (false, true) => client.send_direct_console(&args.command, &args.text).await.map_err(fail)?,
        (true, true) => client.send_direct_stream(&args.command, frame()).await.map_err(fail)?,
    }
    if args.direct {
        // The barrier: the server has handled the command when it answers.
        client.wait().await.map_err(fail)?;
    }
    Ok(())
}
