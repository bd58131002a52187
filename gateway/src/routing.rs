//! Choosing where a request goes: the key must allow the model, then channels serving it for the
//! tenant, highest priority first, weighted-random order within a priority; within each channel
//! its keys in rotation, those out of rotation (disabled, cooling down, breaker open) left out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::Rng;

use crate::error::ApiError;
use crate::state::{Channel, ControlState, KeyEntry, Lane};

/// Candidate lanes (a channel through one of its keys) in the order to try them. Unknown and
/// forbidden models get the same 404; a model whose every key is out of rotation gets 503 with
/// the seconds until the first one is back, when that is known.
pub fn candidates(state: &ControlState, key: &KeyEntry, model: &str, now_us: i64) -> Result<Vec<Lane>, ApiError> {
    if !key.allows(model) {
        return Err(ApiError::ModelNotFound { model: model.to_owned() });
    }
    let mut found: Vec<Arc<Channel>> =
        state.channels.values().filter(|c| c.serves(&key.tenant, model)).cloned().collect();
    if found.is_empty() {
        return Err(ApiError::ModelNotFound { model: model.to_owned() });
    }
    if found.len() > 1 {
        // Weighted shuffle (Efraimidis–Spirakis): key = u^(1/w), larger first.
        let mut rng = rand::thread_rng();
        let mut keyed: Vec<(i32, f64, Arc<Channel>)> = found
            .drain(..)
            .map(|c| {
                let w = f64::from(c.weight.max(1));
                let u: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
                (c.priority, u.powf(1.0 / w), c)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
        found = keyed.into_iter().map(|(_, _, c)| c).collect();
    }
    let mut lanes = Vec::with_capacity(found.len());
    let mut back_at = i64::MAX;
    for channel in &found {
        let Some(of) = state.lanes.get(&channel.id) else { continue };
        let n = of.lanes.len();
        if n == 0 {
            continue;
        }
        // The rotation is among the keys in rotation now, so a key that is out does not hand
        // its share to the key after it.
        let usable = |lane: &Lane| !lane.channel.key_unusable && !lane.key.blocked(now_us);
        let available = of.lanes.iter().filter(|l| usable(l)).count();
        if available < n {
            for lane in of.lanes.iter().filter(|l| !l.channel.key_unusable && l.key.blocked(now_us)) {
                back_at = back_at.min(lane.key.health.back_at(&lane.key.status));
            }
        }
        if available == 0 {
            continue;
        }
        let start = if available > 1 { of.rotation.fetch_add(1, Ordering::Relaxed) % available } else { 0 };
        let first = lanes.len();
        lanes.extend(of.lanes.iter().filter(|l| usable(l)).cloned());
        lanes[first..].rotate_left(start);
    }
    if lanes.is_empty() {
        let retry_after = (back_at != i64::MAX)
            .then(|| u64::try_from(back_at.saturating_sub(now_us)).unwrap_or(0).div_ceil(1_000_000).max(1));
        return Err(ApiError::UpstreamOverloaded { retry_after });
    }
    Ok(lanes)
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
