//! Connects as a user, goes online, watches some users and prints every
//! change until Ctrl-C, which closes the session at once (BYE).
//!
//! ```sh
//! cargo run --release -- serve &
//! TOKEN=$(cargo run --release -- token --user 1)
//! cargo run --example presence -- 127.0.0.1:7400 "$TOKEN" 2 3 4
//! ```

use anyhow::Context;
use futures_util::StreamExt;
use heartline_client::{Client, ClientConfig};
use heartline_proto::Status;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: presence ADDR TOKEN USER...";
    let addr = args.next().context(usage)?;
    let token = heartline::auth::from_text(&args.next().context(usage)?).context("the token is hex")?;
    let users = args.map(|u| u.parse()).collect::<Result<Vec<u64>, _>>().context("user ids are numbers")?;

    let client = Client::connect(ClientConfig { want_udp: true, ..ClientConfig::new(addr, token) }).await?;
    println!("connected, session {:?}", client.session());
    client.set_status(Status::Online, "trying the SDK").await?;
    let mut watch = client.watch(&users).await?;
    loop {
        tokio::select! {
            entry = watch.next() => match entry {
                Some(e) => println!("user {} {:?} {:?} (last seen {} ms, v{})", e.user, e.status, e.text, e.last_seen_ms, e.version),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(watch);
    client.close().await?;
    Ok(())
}
