//! Choosing where a request goes: the key must allow the model, then channels serving it for the
//! tenant (and the providers the request pins or forbids), ordered by the model's route strategy
//! — `priority` (highest priority first, weighted-random within a priority; the default),
//! `lowest-cost` (cheapest price in force first) or `least-latency` (the keys with the lowest
//! moving average of time to first byte first, with exploration) — and within each channel its
//! keys in rotation, those out of rotation (disabled, cooling down, breaker open) left out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::Rng;

use axum::http::HeaderMap;
use schemas::RouteStrategy;

use crate::error::ApiError;
use crate::state::{Channel, ChannelLanes, ControlState, KeyEntry, Lane, RouteKey, route_cost};

/// Which providers a request may use: `X-Router-Provider: a,b` (only these) and
/// `X-Router-Exclude: c` (never these), matched against channels' provider names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderFilter {
    only: Vec<String>,
    exclude: Vec<String>,
}

/// The most names one header may list, and the longest name: provider names are short.
const MAX_FILTER_NAMES: usize = 16;
const MAX_FILTER_NAME: usize = 64;

impl ProviderFilter {
    /// The filter the request's headers ask for (none when absent). Bounded: at most 16 names of
    /// at most 64 bytes per header; longer names match nothing.
    pub fn from_headers(headers: &HeaderMap) -> ProviderFilter {
        let names = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .take(MAX_FILTER_NAMES)
                .map(|n| if n.len() <= MAX_FILTER_NAME { n.to_ascii_lowercase() } else { String::new() })
                .collect()
        };
        ProviderFilter { only: names("x-router-provider"), exclude: names("x-router-exclude") }
    }

    /// Whether a channel of `provider` may serve the request.
    pub fn allows(&self, provider: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p == provider)) && !self.exclude.iter().any(|p| p == provider)
    }
}

/// One request in this many tries the least-latency order's lanes in random order, so a key that
/// was slow once gets measured again.
const EXPLORE_ONE_IN: u32 = 10;

/// Candidate lanes (a channel through one of its keys) in the order to try them: at most
/// `limit` lanes per channel and `3 × limit` in all (a call makes at most `limit` attempts; the
/// spare lanes cover keys that turn out busy and channels skipped after a shared failure), so the
/// cost does not grow with the number of keys. Unknown and forbidden models get the same 404; a
/// model whose every key is out of rotation gets 503 with the seconds until the first one is
/// back, when that is known.
pub fn candidates(
    state: &ControlState,
    key: &KeyEntry,
    model: &str,
    filter: &ProviderFilter,
    limit: usize,
    now_us: i64,
) -> Result<Vec<Lane>, ApiError> {
    if !key.allows(model) {
        return Err(ApiError::ModelNotFound { model: model.to_owned() });
    }
    let limit = limit.max(1);
    let total = limit.saturating_mul(3);
    let strategy = state.routes.get(model).map(|r| r.strategy).unwrap_or_default();
    let mut lanes = Vec::with_capacity(total.min(64));
    let mut back_at = i64::MAX;
    let mut rng = rand::thread_rng();
    // The channels serving the request (with their own price's route cost), from the model's
    // index rather than a scan of every channel.
    let listed = state.by_model.get(model).map(Vec::as_slice).unwrap_or_default();
    let serving = listed
        .iter()
        .map(|s| (&*s.lanes, s.override_cost))
        .chain(state.any_model.iter().map(|l| (&**l, l.override_cost(model))))
        .filter(|(of, _)| {
            let c = &of.channel;
            c.enabled && !c.key_unusable && (of.global || c.tenant == key.tenant) && filter.allows(&c.provider)
        });
    match strategy {
        RouteStrategy::Priority => {
            let mut found: Vec<&Arc<Channel>> = state
                .channels
                .values()
                .filter(|c| c.serves(&key.tenant, model) && filter.allows(&c.provider))
                .collect();
            if found.is_empty() {
                return Err(ApiError::ModelNotFound { model: model.to_owned() });
            }
            // Weighted random order within the highest priority left, picked one channel at a
            // time and only as far as needed.
            while !found.is_empty() && lanes.len() < total {
                let top = found.iter().map(|c| c.priority).max().unwrap_or_default();
                let sum: u64 = found.iter().filter(|c| c.priority == top).map(|c| u64::from(c.weight.max(1))).sum();
                let mut r = rng.gen_range(0..sum.max(1));
                let mut pick = 0;
                for (i, c) in found.iter().enumerate().filter(|(_, c)| c.priority == top) {
                    let w = u64::from(c.weight.max(1));
                    if r < w {
                        pick = i;
                        break;
                    }
                    r -= w;
                }
                let channel = found.swap_remove(pick);
                if let Some(of) = state.lanes.get(&channel.id) {
                    take(of, now_us, limit, &mut lanes, &mut back_at);
                }
            }
        }
        RouteStrategy::LowestCost => {
            // Input plus output price per million tokens in force on each channel (its override,
            // else the model's price); unpriced last; equal prices in random order.
            let model_cost = state.prices.get(model).map(|p| route_cost(p));
            let mut priced: Vec<(i128, u32, &ChannelLanes)> =
                serving.map(|(of, cost)| (cost.or(model_cost).unwrap_or(i128::MAX), rng.r#gen::<u32>(), of)).collect();
            if priced.is_empty() {
                return Err(ApiError::ModelNotFound { model: model.to_owned() });
            }
            // The same order as sorting them all, but only as far as needed: the cheapest
            // channels that can still fill the lanes are selected and sorted, then the next
            // ones if some of those had no key in rotation.
            let mut next = 0;
            while next < priced.len() && lanes.len() < total {
                let rest = &mut priced[next..];
                let n = (total - lanes.len()).min(rest.len());
                if n < rest.len() {
                    rest.select_nth_unstable_by_key(n, |(cost, tie, _)| (*cost, *tie));
                }
                rest[..n].sort_unstable_by_key(|(cost, tie, _)| (*cost, *tie));
                for (_, _, channel) in &rest[..n] {
                    if lanes.len() >= total {
                        break;
                    }
                    take(channel, now_us, limit, &mut lanes, &mut back_at);
                }
                next += n;
            }
        }
        RouteStrategy::LeastLatency => {
            // One in ten requests takes a random `total` of the keys in rotation (so a key that
            // was slow once gets measured again); the others the `total` with the lowest moving
            // average, kept in order during the scan so only those are cloned.
            let explore = rng.gen_ratio(1, EXPLORE_ONE_IN);
            let mut served = false;
            let mut all: Vec<&Lane> = Vec::new();
            let mut best: Vec<(u64, &Lane)> = Vec::with_capacity(total.min(64));
            for (of, _) in serving {
                served = true;
                for (lane, k) in of.lanes.iter().zip(&of.keys).filter(|(_, k)| k.usable) {
                    if k.blocked(now_us) {
                        back_at = back_at.min(k.back_at());
                    } else if explore {
                        all.push(lane);
                    } else {
                        // Unmeasured keys (0) first: each is tried until it has a sample.
                        let t = k.health.ttfb_us();
                        if best.len() == total {
                            if best.last().is_none_or(|(worst, _)| t >= *worst) {
                                continue;
                            }
                            best.pop();
                        }
                        let at = best.partition_point(|(b, _)| *b <= t);
                        best.insert(at, (t, lane));
                    }
                }
            }
            if !served {
                return Err(ApiError::ModelNotFound { model: model.to_owned() });
            }
            if explore {
                use rand::seq::SliceRandom as _;
                let (picked, _) = all.partial_shuffle(&mut rng, total);
                lanes.extend(picked.iter().map(|l| (*l).clone()));
            } else {
                lanes.extend(best.into_iter().map(|(_, l)| l.clone()));
            }
        }
    }
    if lanes.is_empty() {
        let retry_after = (back_at != i64::MAX)
            .then(|| u64::try_from(back_at.saturating_sub(now_us)).unwrap_or(0).div_ceil(1_000_000).max(1));
        return Err(ApiError::NoHealthyUpstream { retry_after });
    }
    Ok(lanes)
}

/// Appends up to `cap` of `channel`'s lanes in rotation to `lanes`. The rotation is among the
/// keys in rotation now, so a key that is out does not hand its share to the key after it; the
/// earliest return of a key that is out goes into `back_at`.
fn take(of: &ChannelLanes, now_us: i64, cap: usize, lanes: &mut Vec<Lane>, back_at: &mut i64) {
    let usable = |k: &RouteKey| k.usable && !k.blocked(now_us);
    let available = of.keys.iter().filter(|k| usable(k)).count();
    if available < of.keys.len() {
        for k in of.keys.iter().filter(|k| k.usable && k.blocked(now_us)) {
            *back_at = (*back_at).min(k.back_at());
        }
    }
    if available == 0 {
        return;
    }
    let start = if available > 1 { of.rotation.fetch_add(1, Ordering::Relaxed) % available } else { 0 };
    let in_rotation = || of.lanes.iter().zip(&of.keys).filter(|(_, k)| usable(k)).map(|(l, _)| l);
    let ordered = in_rotation().skip(start).chain(in_rotation().take(start));
    lanes.extend(ordered.take(cap).cloned());
}

/// The models to try, in order, when `model`'s channels all failed or its context window was
/// exceeded (its route's fallback list).
pub fn fallbacks(state: &ControlState, model: &str) -> Vec<String> {
    state.routes.get(model).map(|r| r.fallback.clone()).unwrap_or_default()
}

/// Whether `model` is served to `key` at all (the 404 of [`candidates`]), whatever the state of
/// its keys: for model reads and token counts, which send nothing upstream.
pub fn check_model(state: &ControlState, key: &KeyEntry, model: &str) -> Result<(), ApiError> {
    if key.allows(model) && state.channels.values().any(|c| c.serves(&key.tenant, model)) {
        Ok(())
    } else {
        Err(ApiError::ModelNotFound { model: model.to_owned() })
    }
}

/// Models the key may use, sorted.
pub fn visible_models(state: &ControlState, key: &KeyEntry) -> Vec<String> {
    let mut models: Vec<String> = state
        .channels
        .values()
        .filter(|c| c.enabled && !c.key_unusable && (c.tenant == schemas::GLOBAL_TENANT || c.tenant == key.tenant))
        .flat_map(|c| c.models.iter())
        .filter(|m| *m != crate::state::ANY_MODEL && key.allows(m))
        .cloned()
        .collect();
    models.sort();
    models.dedup();
    models
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use schemas::secret::MasterKey;
    use schemas::{
        ChannelAdded, ChannelKeyAdded, Envelope, EventBody, GLOBAL_TENANT, PricePublished, RouteSet, RouteStrategy,
    };

    use super::*;
    use crate::health::{Admission, BreakerConfig, Verdict};
    use crate::state::Folder;

    const MODEL: &str = "m";

    struct Fixture {
        folder: Folder,
        master: MasterKey,
        seq: u64,
    }

    impl Fixture {
        /// `channels` channels of `keys` keys each (`ch_0`…, keys `ukey_<c>_<k>`), routed by
        /// `strategy`.
        fn new(channels: usize, keys: usize, strategy: RouteStrategy) -> Fixture {
            let mut f = Fixture { folder: Folder::default(), master: MasterKey::generate(), seq: 0 };
            for c in 0..channels {
                let id = format!("ch_{c}");
                let sealed = f.master.seal("sk-0", &id);
                f.apply(EventBody::ChannelAdded(ChannelAdded {
                    channel_id: id.clone(),
                    name: id.clone(),
                    provider: "openai".into(),
                    base_url: "https://api.openai.com/v1".into(),
                    api_key: Some(sealed),
                    models: vec![MODEL.into()],
                    priority: 0,
                    weight: 1,
                    api_version: None,
                    insecure_http: false,
                    anthropic_beta: Vec::new(),
                    proxy_pool: None,
                }));
                for k in 1..keys {
                    let key_id = format!("ukey_{c}_{k}");
                    let sealed = f.master.seal("sk-k", &schemas::key_seal_context(&id, &key_id));
                    f.apply(EventBody::ChannelKeyAdded(ChannelKeyAdded {
                        api_key: sealed,
                        channel_id: id.clone(),
                        key_id,
                        fingerprint: None,
                    }));
                }
            }
            f.apply(EventBody::RouteSet(RouteSet { model: MODEL.into(), strategy, fallback: Vec::new() }));
            f
        }

        fn apply(&mut self, body: EventBody) {
            self.seq += 1;
            let env = Envelope::new(GLOBAL_TENANT, "test", 1, body);
            self.folder.apply(self.seq, &env, &self.master);
        }

        fn price(&mut self, channel: Option<usize>, input: i64) {
            self.apply(EventBody::PricePublished(PricePublished {
                model: MODEL.into(),
                channel_id: channel.map(|c| format!("ch_{c}")),
                currency: "USD".into(),
                input_per_mtok_nanos: input,
                output_per_mtok_nanos: 1_000,
                cached_input_per_mtok_nanos: None,
                cache_write_per_mtok_nanos: None,
            }));
        }

        fn lanes(&self, channel: usize) -> anyhow::Result<&ChannelLanes> {
            self.folder
                .state
                .lanes
                .get(&format!("ch_{channel}"))
                .map(|l| &**l)
                .ok_or_else(|| anyhow::anyhow!("no ch_{channel}"))
        }

        /// The channels of `candidates`' lanes, in order, each once.
        fn channel_order(&self, limit: usize) -> anyhow::Result<Vec<String>> {
            let mut order: Vec<String> = Vec::new();
            for lane in self.candidates(limit).map_err(|e| anyhow::anyhow!("{e:?}"))? {
                if order.last() != Some(&lane.channel.id) {
                    order.push(lane.channel.id.clone());
                }
            }
            Ok(order)
        }

        fn candidates(&self, limit: usize) -> Result<Vec<Lane>, ApiError> {
            let key = KeyEntry {
                key_id: "key_t".into(),
                tenant: "acme".into(),
                models: None,
                revoked: false,
                max_output_tokens: None,
                max_n: None,
                expires_at_us: None,
            };
            candidates(&self.folder.state, &key, MODEL, &ProviderFilter::default(), limit, crate::health::now_us())
        }
    }

    fn names(ids: &[usize]) -> Vec<String> {
        ids.iter().map(|c| format!("ch_{c}")).collect()
    }

    /// Keeps every key of `channel` out of rotation for a minute (a 429 here).
    fn cool_down(lanes: &ChannelLanes) {
        for lane in &lanes.lanes {
            let _ = lane.key.health.outcome(
                &lane.key.status,
                Admission::Yes,
                Verdict::CoolDown(Some(60)),
                &BreakerConfig::default(),
                crate::health::now_us(),
            );
        }
    }

    #[test]
    fn lowest_cost_tries_channels_cheapest_first_by_the_price_in_force_and_unpriced_last() -> anyhow::Result<()> {
        let mut f = Fixture::new(8, 2, RouteStrategy::LowestCost);
        // Model-wide 500 on every channel; overrides make 3, 6, 1 and 4 cheaper, 0 dearer; 7 and 2
        // stay at 500 (equal, so in either order); 5 has an override that a later one replaces.
        f.price(None, 500);
        for (c, input) in [(3, 100), (6, 200), (1, 300), (4, 400), (0, 900), (5, 50)] {
            f.price(Some(c), input);
        }
        f.price(Some(5), 800);
        // Two lanes per channel, six in all: the three cheapest channels.
        assert_eq!(f.channel_order(2)?, names(&[3, 6, 1]));
        // One lane per channel, three in all.
        assert_eq!(f.channel_order(1)?, names(&[3, 6, 1]));
        // Every lane: the whole order, the two at 500 in either order.
        let order = f.channel_order(8)?;
        assert_eq!(order.len(), 8, "{order:?}");
        assert_eq!(order[..4], names(&[3, 6, 1, 4]));
        let mut tied = order[4..6].to_vec();
        tied.sort();
        assert_eq!(tied, names(&[2, 7]));
        assert_eq!(order[6..], names(&[5, 0]));
        // A channel with no key in rotation is passed over for the next cheapest.
        cool_down(f.lanes(6)?);
        assert_eq!(f.channel_order(2)?, names(&[3, 1, 4]));
        // A new price takes effect at once.
        f.price(Some(0), 10);
        assert_eq!(f.channel_order(2)?, names(&[0, 3, 1]));
        Ok(())
    }

    #[test]
    fn lowest_cost_puts_unpriced_channels_last_and_shuffles_equal_prices() -> anyhow::Result<()> {
        let mut f = Fixture::new(4, 1, RouteStrategy::LowestCost);
        f.price(Some(2), 100);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let order = f.channel_order(3)?;
            assert_eq!(order.len(), 4, "{order:?}");
            assert_eq!(order[0], "ch_2", "{order:?}");
            firsts.insert(order[1].clone());
        }
        // The three unpriced channels are equal: each comes second some of the time.
        assert_eq!(firsts.len(), 3, "{firsts:?}");
        Ok(())
    }

    #[test]
    fn least_latency_tries_the_fastest_keys_first_and_still_explores() -> anyhow::Result<()> {
        let f = Fixture::new(4, 5, RouteStrategy::LeastLatency);
        // Twenty keys with distinct averages, not in the order they were added; one unmeasured.
        let mut expected: Vec<(u64, String)> = Vec::new();
        for c in 0..4 {
            for (k, lane) in f.lanes(c)?.lanes.iter().enumerate() {
                let i = c * 5 + k;
                if i == 13 {
                    expected.push((0, lane.key.id.clone()));
                    continue;
                }
                let ms = u64::try_from((i * 7) % 20 + 1).unwrap_or(1) * 10;
                lane.key.health.note_ttfb(Duration::from_millis(ms));
                expected.push((ms * 1000, lane.key.id.clone()));
            }
        }
        // A fast key that is out of rotation is left out.
        let out = &f.lanes(1)?.lanes[0];
        out.key.health.note_ttfb(Duration::from_micros(1));
        expected.retain(|(_, id)| *id != out.key.id);
        let _ = out.key.health.outcome(
            &out.key.status,
            Admission::Yes,
            Verdict::CoolDown(Some(60)),
            &BreakerConfig::default(),
            crate::health::now_us(),
        );
        expected.sort();
        let expected: Vec<String> = expected.into_iter().take(9).map(|(_, id)| id).collect();
        let (mut fastest, mut other) = (0, 0);
        for _ in 0..300 {
            let got: Vec<String> =
                f.candidates(3).map_err(|e| anyhow::anyhow!("{e:?}"))?.iter().map(|l| l.key.id.clone()).collect();
            assert_eq!(got.len(), 9);
            assert!(!got.contains(&out.key.id), "{got:?}");
            if got == expected {
                fastest += 1;
            } else {
                other += 1;
            }
        }
        // One in ten explores (a random order), the rest take the fastest nine in order.
        assert!(fastest >= 230, "{fastest} fastest, {other} other");
        assert!(other >= 5, "{fastest} fastest, {other} other");
        Ok(())
    }

    #[test]
    fn a_model_no_channel_serves_is_not_found_for_every_strategy() -> anyhow::Result<()> {
        for strategy in [RouteStrategy::Priority, RouteStrategy::LowestCost, RouteStrategy::LeastLatency] {
            let f = Fixture::new(2, 2, strategy);
            let key = KeyEntry {
                key_id: "key_t".into(),
                tenant: "acme".into(),
                models: None,
                revoked: false,
                max_output_tokens: None,
                max_n: None,
                expires_at_us: None,
            };
            let got = candidates(&f.folder.state, &key, "other", &ProviderFilter::default(), 3, 0);
            assert!(matches!(got, Err(ApiError::ModelNotFound { .. })), "{strategy:?}: {got:?}");
        }
        Ok(())
    }

    #[test]
    fn the_model_index_follows_channel_updates_removals_and_wildcards() -> anyhow::Result<()> {
        for strategy in [RouteStrategy::LowestCost, RouteStrategy::LeastLatency] {
            let mut f = Fixture::new(4, 1, strategy);
            let sorted = |f: &Fixture| -> anyhow::Result<Vec<String>> {
                let mut order = f.channel_order(3)?;
                order.sort();
                Ok(order)
            };
            assert_eq!(sorted(&f)?, names(&[0, 1, 2, 3]));
            let update = |id: &str, models: Option<Vec<String>>, enabled: Option<bool>| {
                EventBody::ChannelUpdated(schemas::ChannelUpdated {
                    channel_id: id.into(),
                    models,
                    enabled,
                    ..Default::default()
                })
            };
            f.apply(update("ch_0", Some(vec!["other".into()]), None));
            f.apply(update("ch_1", Some(vec![crate::state::ANY_MODEL.into(), MODEL.into()]), None));
            f.apply(update("ch_2", None, Some(false)));
            f.apply(EventBody::ChannelRemoved(schemas::ChannelRemoved { channel_id: "ch_3".into() }));
            assert_eq!(sorted(&f)?, names(&[1]), "{strategy:?}");
            f.apply(update("ch_2", None, Some(true)));
            f.apply(update("ch_0", Some(vec![MODEL.into(), MODEL.into()]), None));
            assert_eq!(sorted(&f)?, names(&[0, 1, 2]), "{strategy:?}");
            let state = &f.folder.state;
            assert_eq!(state.by_model.get(MODEL).map(Vec::len), Some(2), "{strategy:?}");
            assert!(!state.by_model.contains_key("other"), "{strategy:?}");
            assert_eq!(state.any_model.len(), 1, "{strategy:?}");
        }
        Ok(())
    }
}
