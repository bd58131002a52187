//! The JetStream stream definitions and their idempotent creation. Only settings a 2.9 server
//! understands are used (no per-subject discard, no subject transforms, no compression).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use schemas::Stream;

use super::JetStreamOptions;
use crate::LogError;

/// Billing dedups by `Nats-Msg-Id` for 10 minutes, which covers a gateway's retries through a
/// short NATS outage; longer outages are absorbed by the projections' dedup by event id.
const BILLING_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The ops stream dedups by `Nats-Msg-Id` for 10 minutes: longer than the gap between two
/// workers probing the same slot.
const OPS_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The configuration we require for `s`: `opts.replicas` copies, and the request log kept for
/// `opts.requests_max_age`.
pub(crate) fn config(s: Stream, opts: &JetStreamOptions) -> stream::Config {
    let base = stream::Config {
        name: s.name().to_owned(),
        subjects: vec![s.subjects().to_owned()],
        storage: stream::StorageType::File,
        // Replay from the start rebuilds every projection, so nothing may be dropped early.
        retention: stream::RetentionPolicy::Limits,
        num_replicas: opts.replicas.max(1),
        ..Default::default()
    };
    match s {
        Stream::Control => stream::Config { deny_delete: true, deny_purge: true, ..base },
        Stream::Billing => stream::Config {
            deny_delete: true,
            deny_purge: true,
            // When an operator sets a size limit, refuse new charges rather than evict old ones.
            discard: stream::DiscardPolicy::New,
            duplicate_window: BILLING_DUPLICATE_WINDOW,
            ..base
        },
        Stream::Requests => stream::Config { max_age: opts.requests_max_age, ..base },
        // Health probes: kept as long as the request log; a probe slot's event id is derived,
        // so two workers probing the same slot store one event.
        Stream::Ops => {
            stream::Config { max_age: opts.requests_max_age, duplicate_window: OPS_DUPLICATE_WINDOW, ..base }
        }
    }
}

/// Creates the streams, or brings existing ones to our configuration; safe to run on
/// every start and from several processes at once.
pub(crate) async fn ensure(js: &jetstream::Context, opts: &JetStreamOptions) -> Result<(), LogError> {
    for s in Stream::ALL {
        js.create_or_update_stream(config(s, opts))
            .await
            .map_err(|e| LogError::Nats(format!("cannot ensure stream {}: {e}", s.name())))?;
    }
    Ok(())
}
