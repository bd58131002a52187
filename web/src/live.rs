//! The admin API's live view of the control log: users (role, tenant, disabled, sessions) and
//! the session secret, folded by the one control model (`schemas::control`) from the control
//! stream as it grows. Every authenticated request checks its user here, so a disabled user or
//! a logged-out token stops working as soon as this process has read the event (JetStream
//! pushes it; the embedded log wakes tails on an append and polls every 100 ms).
//!
//! Only user, session-secret, channel, route and proxy events are folded: the users' rules
//! depend on nothing else, channels (with their upstream keys' states), routes and proxies (with
//! their states; at most 256 per pool) are few and `/api/channels`, `/api/routes`,
//! `/api/proxies` and `/api/health/*` read them from here, and the gateway already holds API
//! keys — this view stays small however many keys exist.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use nats::EventLog;
use schemas::control::{ControlModel, Outcome, User};
use schemas::{EventBody, Stream};
use tokio::sync::watch;

/// One snapshot of the users.
#[derive(Debug, Default)]
pub struct Snapshot {
    model: ControlModel,
}

impl Snapshot {
    /// The user with this id.
    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.model.users.get(user_id)
    }

    /// The user with this (lower-case) email.
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.model.user_by_email(email)
    }

    /// The whole control model (e.g. for a channel's proxy pool).
    pub fn model(&self) -> &ControlModel {
        &self.model
    }

    /// The live channels, by id (creation order: ids are UUIDv7).
    pub fn channels(&self) -> impl Iterator<Item = &schemas::control::Channel> {
        self.model.channels.values()
    }

    /// The live channel with this id.
    pub fn channel(&self, channel_id: &str) -> Option<&schemas::control::Channel> {
        self.model.channels.get(channel_id)
    }

    /// The live proxies, by id (creation order: ids are UUIDv7).
    pub fn proxies(&self) -> impl Iterator<Item = &schemas::control::Proxy> {
        self.model.proxies.values()
    }

    /// The routes, by model.
    pub fn routes(&self) -> impl Iterator<Item = &schemas::RouteSet> {
        self.model.routes.values()
    }

    /// The sealed session secret, when one was generated.
    pub fn session_secret(&self) -> Option<&schemas::secret::Sealed> {
        self.model.session_secret.as_ref()
    }
}

/// The live view: the latest snapshot and the last control sequence read.
pub struct Live {
    current: RwLock<Arc<Snapshot>>,
    applied: watch::Sender<u64>,
}

/// How long to wait before re-opening a tail that ended.
const RETAIL: Duration = Duration::from_millis(200);

fn relevant(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::UserCreated(_)
            | EventBody::UserUpdated(_)
            | EventBody::UserDisabled(_)
            | EventBody::UserSessionsRevoked(_)
            | EventBody::SessionSecretGenerated(_)
            | EventBody::ChannelAdded(_)
            | EventBody::ChannelUpdated(_)
            | EventBody::ChannelRemoved(_)
            | EventBody::ChannelKeyAdded(_)
            | EventBody::ChannelKeyRemoved(_)
            | EventBody::ChannelKeyUpdated(_)
            | EventBody::UpstreamKeyStateChanged(_)
            | EventBody::RouteSet(_)
            | EventBody::RouteRemoved(_)
            | EventBody::ProxyAdded(_)
            | EventBody::ProxyRemoved(_)
            | EventBody::ProxyStateChanged(_)
    )
}

impl Live {
    /// Starts following the control stream of `log` and returns once it has read everything the
    /// stream held at the call (bounded by `ready_within`; past it the view fills in behind).
    pub async fn start(log: &EventLog, ready_within: Duration) -> Arc<Live> {
        let (applied, mut watcher) = watch::channel(0u64);
        let live = Arc::new(Live { current: RwLock::new(Arc::new(Snapshot::default())), applied });
        let until = log.last_seq(Stream::Control).await.unwrap_or(0);
        tokio::spawn(follow(log.clone(), Arc::downgrade(&live)));
        if until > 0 {
            let _ = tokio::time::timeout(ready_within, watcher.wait_for(|s| *s >= until)).await;
        }
        live
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The last control sequence read.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn publish(&self, model: &ControlModel, seq: u64) {
        let next = Arc::new(Snapshot { model: model.clone() });
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
        self.applied.send_replace(seq);
    }
}

async fn follow(log: EventLog, live: Weak<Live>) {
    let mut model = ControlModel::default();
    let mut seq = 0u64;
    loop {
        let mut tail = log.tail(Stream::Control, seq);
        while let Some(first) = tail.next().await {
            let mut item = Some(first);
            let mut changed = false;
            while let Some(next) = item {
                match next {
                    Ok(ev) => {
                        if let Ok(env) = ev.decode()
                            && relevant(&env.body)
                        {
                            match model.apply(ev.seq, &env) {
                                Outcome::Changed(_) => changed = true,
                                Outcome::Rejected(reason) => {
                                    tracing::warn!(seq = ev.seq, reason, "Control event refused by the control model.");
                                }
                                Outcome::Unchanged | Outcome::NotControl => {}
                            }
                        }
                        seq = seq.max(ev.seq);
                    }
                    Err(e) => tracing::warn!(error = %e, "Control tail reported an error."),
                }
                item = tail.next().now_or_never().flatten();
            }
            let Some(live) = live.upgrade() else { return };
            if changed {
                live.publish(&model, seq);
            } else {
                live.applied.send_replace(seq);
            }
        }
        if live.strong_count() == 0 {
            return;
        }
        tracing::warn!(after = seq, "Admin API control tail ended; re-opening it.");
        tokio::time::sleep(RETAIL).await;
    }
}
