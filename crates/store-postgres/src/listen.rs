//! Wake-ups: a connection of its own (not from the pool) LISTENs on the wake-up channel and
//! forwards what the store's schema announces into the store's [`WakeupSender`].

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};

use afallon_store::{Wakeup, WakeupSender};

use crate::db::{AbortOnDrop, CHANNEL};

/// A listening connection: its client, the notifications its connection task forwards, and
/// that task (stopped with it).
pub(crate) struct Listening {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    _connection: AbortOnDrop,
}

/// Connects and LISTENs; once this returns, every wake-up committed afterwards is received.
pub(crate) async fn listen(config: &Config, timeout: Duration) -> Result<Listening, String> {
    let connect = async {
        let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        let (forward, notifications) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        if forward.send(notification).is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the wake-up connection failed");
                        break;
                    }
                    None => break,
                }
            }
        });
        let connection = AbortOnDrop(task);
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| e.to_string())?;
        Ok(Listening { client, notifications, _connection: connection })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| Err("timed out connecting for wake-ups".into()))
}

/// The wake-up a payload (see [`crate::db::payload`]) announces, if it is for `schema`.
fn wakeup(payload: &str, schema: u32) -> Option<Wakeup> {
    let (kind, rest) = payload.split_once(':')?;
    let (oid, id) = rest.split_once(':')?;
    if oid.parse::<u32>().ok()? != schema {
        return None;
    }
    let id = id.to_owned();
    Some(match kind {
        "q" => Wakeup::Queued { worker_id: id },
        "f" => Wakeup::Finished { work_order_id: id },
        "r" => Wakeup::ReceiptAwaiting { worker_id: id },
        _ => Wakeup::Missed,
    })
}

/// The wake-up task: forwards notifications until the connection fails (or stops answering a
/// ping, sent every `ping`), then connects again with a growing pause and announces
/// [`Wakeup::Missed`], since notifications committed meanwhile were lost.
pub(crate) async fn forward(
    mut listening: Listening,
    config: Config,
    schema: u32,
    sender: WakeupSender,
    ping: Duration,
) {
    let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
    loop {
        run(&mut listening, schema, &sender, ping, timeout).await;
        let mut pause = Duration::from_millis(100);
        listening = loop {
            tokio::time::sleep(pause).await;
            match listen(&config, timeout).await {
                Ok(listening) => break listening,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for wake-ups");
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!("listening for wake-ups again");
        sender.send(Wakeup::Missed);
    }
}

/// Forwards notifications until the connection fails.
async fn run(
    listening: &mut Listening,
    schema: u32,
    sender: &WakeupSender,
    ping: Duration,
    timeout: Duration,
) {
    let mut pings = tokio::time::interval(ping);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.tick().await;
    loop {
        tokio::select! {
            notification = listening.notifications.recv() => {
                let Some(notification) = notification else { return };
                if let Some(wakeup) = wakeup(notification.payload(), schema) {
                    sender.send(wakeup);
                }
            }
            _ = pings.tick() => {
                let answered = tokio::time::timeout(timeout, listening.client.simple_query(""));
                if !matches!(answered.await, Ok(Ok(_))) {
                    tracing::warn!("the wake-up connection stopped answering");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wakeup;
    use crate::db::payload;
    use afallon_store::Wakeup;

    #[test]
    fn payloads_name_their_schema_and_kind() {
        let queued = payload('q', 7, "w:1");
        assert_eq!(queued, "q:7:w:1");
        assert_eq!(wakeup(&queued, 7), Some(Wakeup::Queued { worker_id: "w:1".into() }));
        assert_eq!(wakeup(&queued, 8), None, "another schema's");
        let finished = payload('f', 7, "o");
        assert_eq!(wakeup(&finished, 7), Some(Wakeup::Finished { work_order_id: "o".into() }));
        let awaiting = payload('r', 7, "w");
        assert_eq!(wakeup(&awaiting, 7), Some(Wakeup::ReceiptAwaiting { worker_id: "w".into() }));
        let long = payload('f', 7, &"x".repeat(10_000));
        assert_eq!(wakeup(&long, 7), Some(Wakeup::Missed));
        assert_eq!(wakeup("garbage", 7), None);
    }
}
