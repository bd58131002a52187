//! Tails over JetStream ordered consumers. A tail remembers the last stream sequence it handed
//! out and, whenever its consumer fails or the client reconnects (the server lost its ephemeral
//! consumers), starts a new one at that sequence + 1, dropping anything at or below it. That is
//! what makes a tail gap-free and duplicate-free across NATS restarts.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use futures::stream::BoxStream;
use schemas::Stream;
use tokio::sync::{mpsc, watch};

use crate::{LogError, StoredEvent};

/// Events buffered between the consumer and the reader; about one pull batch.
const BUFFER: usize = 512;
/// Pause before re-creating a consumer that failed; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Starts a tail task; the returned stream ends only when the reader drops it.
pub(super) fn tail(
    client: async_nats::Client,
    js: jetstream::Context,
    mut connects: watch::Receiver<u64>,
    stream: Stream,
    after: u64,
) -> BoxStream<'static, Result<StoredEvent, LogError>> {
    let (tx, rx) = mpsc::channel::<Result<StoredEvent, LogError>>(BUFFER);
    tokio::spawn(async move {
        let mut last = after;
        let mut backoff = MIN_BACKOFF;
        loop {
            // Mark reconnects seen before the consumer exists; one after this point means the
            // server may have lost it.
            connects.borrow_and_update();
            // Creating a consumer while disconnected would only wait out the request timeout;
            // the reconnect below wakes us instead.
            let opened = if client.connection_state() == async_nats::connection::State::Connected {
                open(&js, stream, last).await
            } else {
                Err("not connected to NATS".into())
            };
            match opened {
                Ok(mut messages) => loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = connects.changed() => {
                            tracing::debug!(stream = stream.name(), last, "Reconnected; re-creating the tail consumer.");
                            break;
                        }
                        next = messages.next() => match next {
                            Some(Ok(msg)) => {
                                let seq = match msg.info() {
                                    Ok(info) => info.stream_sequence,
                                    Err(e) => {
                                        tracing::warn!(stream = stream.name(), error = %e, "Tail message without JetStream metadata.");
                                        break;
                                    }
                                };
                                // A re-created consumer may start before `last`; those are already out.
                                if seq <= last {
                                    continue;
                                }
                                last = seq;
                                backoff = MIN_BACKOFF;
                                let ev = StoredEvent { stream, seq, payload: msg.payload.clone() };
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(stream = stream.name(), last, error = %e, "Tail consumer failed; re-creating it.");
                                break;
                            }
                            None => break,
                        },
                    }
                },
                Err(e) => {
                    tracing::debug!(stream = stream.name(), last, error = %e, "Cannot create the tail consumer yet.");
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
                _ = connects.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn open(
    js: &jetstream::Context,
    stream: Stream,
    last: u64,
) -> Result<consumer::pull::Ordered, Box<dyn std::error::Error + Send + Sync>> {
    let deliver_policy = if last == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence { start_sequence: last + 1 }
    };
    let consumer = js
        .create_consumer_on_stream(
            consumer::pull::OrderedConfig { deliver_policy, ..Default::default() },
            stream.name(),
        )
        .await?;
    Ok(consumer.messages().await?)
}
