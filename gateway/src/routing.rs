//! Choosing upstream channels for a model: the key must allow the model, then channels serving
//! it for the tenant, highest priority first, weighted-random order within a priority.

use std::sync::Arc;

use rand::Rng;

use crate::error::ApiError;
use crate::state::{Channel, ControlState, KeyEntry};

/// Candidate channels in the order to try them. Unknown and forbidden models get the same 404.
pub fn candidates(state: &ControlState, key: &KeyEntry, model: &str) -> Result<Vec<Arc<Channel>>, ApiError> {
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
    Ok(found)
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
