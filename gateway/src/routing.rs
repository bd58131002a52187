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
use crate::state::{Channel, ControlState, KeyEntry, Lane};

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
    let mut found: Vec<&Arc<Channel>> =
        state.channels.values().filter(|c| c.serves(&key.tenant, model) && filter.allows(&c.provider)).collect();
    if found.is_empty() {
        return Err(ApiError::ModelNotFound { model: model.to_owned() });
    }
    let limit = limit.max(1);
    let total = limit.saturating_mul(3);
    let strategy = state.routes.get(model).map(|r| r.strategy).unwrap_or_default();
    let mut lanes = Vec::with_capacity(total.min(64));
    let mut back_at = i64::MAX;
    let mut rng = rand::thread_rng();
    match strategy {
        RouteStrategy::Priority => {
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
                take(state, channel, now_us, limit, &mut lanes, &mut back_at);
            }
        }
        RouteStrategy::LowestCost => {
            // Input plus output price per million tokens in force on each channel; unpriced last;
            // equal prices in random order.
            let model_price = state.prices.get(model);
            let overrides = !state.channel_prices.is_empty();
            let mut priced: Vec<(i128, u32, &Arc<Channel>)> = found
                .iter()
                .map(|c| {
                    let price = if overrides {
                        state.channel_prices.get(&c.id).and_then(|m| m.get(model)).or(model_price)
                    } else {
                        model_price
                    };
                    let cost = price.map_or(i128::MAX, |p| {
                        i128::from(p.input_per_mtok_nanos) + i128::from(p.output_per_mtok_nanos)
                    });
                    (cost, rng.r#gen::<u32>(), *c)
                })
                .collect();
            priced.sort_unstable_by_key(|(cost, tie, _)| (*cost, *tie));
            for (_, _, channel) in priced {
                if lanes.len() >= total {
                    break;
                }
                take(state, channel, now_us, limit, &mut lanes, &mut back_at);
            }
        }
        RouteStrategy::LeastLatency => {
            // Every key in rotation with its average, then only the fastest are cloned.
            let mut all: Vec<(u64, &Lane)> = Vec::new();
            for channel in found {
                let Some(of) = state.lanes.get(&channel.id) else { continue };
                for lane in of.lanes.iter().filter(|l| !l.channel.key_unusable) {
                    if lane.key.blocked(now_us) {
                        back_at = back_at.min(lane.key.health.back_at(&lane.key.status));
                    } else {
                        all.push((lane.key.health.ttfb_us(), lane));
                    }
                }
            }
            if all.len() > 1 && rng.gen_ratio(1, EXPLORE_ONE_IN) {
                use rand::seq::SliceRandom as _;
                all.shuffle(&mut rng);
            } else {
                // Unmeasured keys (0) first: each is tried until it has a sample.
                if all.len() > total {
                    all.select_nth_unstable_by_key(total, |(t, _)| *t);
                    all.truncate(total);
                }
                all.sort_by_key(|(t, _)| *t);
            }
            lanes.extend(all.into_iter().take(total).map(|(_, l)| l.clone()));
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
fn take(state: &ControlState, channel: &Channel, now_us: i64, cap: usize, lanes: &mut Vec<Lane>, back_at: &mut i64) {
    let Some(of) = state.lanes.get(&channel.id) else { return };
    let usable = |lane: &Lane| !lane.channel.key_unusable && !lane.key.blocked(now_us);
    let available = of.lanes.iter().filter(|l| usable(l)).count();
    if available < of.lanes.len() {
        for lane in of.lanes.iter().filter(|l| !l.channel.key_unusable && l.key.blocked(now_us)) {
            *back_at = (*back_at).min(lane.key.health.back_at(&lane.key.status));
        }
    }
    if available == 0 {
        return;
    }
    let start = if available > 1 { of.rotation.fetch_add(1, Ordering::Relaxed) % available } else { 0 };
    let in_rotation = || of.lanes.iter().filter(|l| usable(l));
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
