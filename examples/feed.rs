//! Posts, then follows the live home timeline until Ctrl-C.
//!
//! ```sh
//! cargo run --example feed -- 127.0.0.1:7400 "$(cargo run -- token --user 1)" "hello, world"
//! ```
//!
//! Until the server enables the feed it answers UNAVAILABLE, which this
//! example prints as the error it is.

use anyhow::Context;
use futures_util::StreamExt;
use heartline_client::{Client, ClientConfig, LiveEvent};
use heartline_proto::Cursor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: feed ADDR TOKEN TEXT";
    let addr = args.next().context(usage)?;
    let token = heartline::auth::from_text(&args.next().context(usage)?).context("the token is hex")?;
    let text = args.next().context(usage)?;

    let client = Client::connect(ClientConfig::new(addr, token)).await?;
    let mut live = client.live().await?;
    let post = client.post(1, text).await?;
    println!("posted {post:#018x}");
    for item in client.home_timeline(Cursor::default(), 20).await? {
        println!("{:#018x} by {}: {}", item.post, item.author, String::from_utf8_lossy(&item.payload));
    }
    loop {
        tokio::select! {
            event = live.next() => match event {
                Some(LiveEvent::Item(item)) => println!("new {:#018x} by {}", item.post, item.author),
                Some(LiveEvent::Deleted { post }) => println!("deleted {post:#018x}"),
                Some(LiveEvent::Gap) => println!("(reconnected: catch up with min_id)"),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(live);
    client.close().await?;
    Ok(())
}
