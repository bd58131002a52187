//! The routing decision alone: the lanes (channel × key) a request for one model is tried on,
//! with 100 channels of 10 keys each serving that model, for each route strategy. Builds the
//! control state through the same fold the gateway uses, then times `routing::candidates` (for
//! the default `max_attempts`, 3) in a loop on one thread. Usage: `cargo run --release -p bench --bin routing [-- ITERATIONS]`.

use std::time::Instant;

use gateway::routing::{ProviderFilter, candidates};
use gateway::state::{Folder, KeyEntry};
use schemas::secret::MasterKey;
use schemas::{
    ChannelAdded, ChannelKeyAdded, Envelope, EventBody, GLOBAL_TENANT, PricePublished, RouteSet, RouteStrategy,
};

const CHANNELS: usize = 100;
const KEYS: usize = 10;
const MODEL: &str = "gpt-4o";

fn event(body: EventBody) -> Envelope {
    Envelope::new(GLOBAL_TENANT, "bench", 1, body)
}

fn state_with(strategy: RouteStrategy) -> Folder {
    let master = MasterKey::generate();
    let mut folder = Folder::default();
    let mut seq = 0;
    let mut apply = |folder: &mut Folder, body: EventBody| {
        seq += 1;
        folder.apply(seq, &event(body), &master);
    };
    for c in 0..CHANNELS {
        let id = format!("ch_{c:03}");
        apply(
            &mut folder,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.clone(),
                name: id.clone(),
                provider: "openai".into(),
                base_url: "https://api.openai.com/v1".into(),
                api_key: Some(master.seal(&format!("sk-{id}-0"), &id)),
                models: vec![MODEL.into(), "gpt-4o-mini".into()],
                priority: i32::try_from(c % 3).unwrap_or(0),
                weight: u32::try_from(c % 5 + 1).unwrap_or(1),
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        );
        for k in 1..KEYS {
            let key_id = format!("ukey_{c:03}_{k}");
            apply(
                &mut folder,
                EventBody::ChannelKeyAdded(ChannelKeyAdded {
                    api_key: master.seal(&format!("sk-{id}-{k}"), &schemas::key_seal_context(&id, &key_id)),
                    channel_id: id.clone(),
                    key_id,
                    fingerprint: None,
                }),
            );
        }
        apply(
            &mut folder,
            EventBody::PricePublished(PricePublished {
                model: MODEL.into(),
                channel_id: Some(id.clone()),
                currency: "USD".into(),
                input_per_mtok_nanos: i64::try_from(1_000_000 + c * 1000).unwrap_or(0),
                output_per_mtok_nanos: 4_000_000,
                cached_input_per_mtok_nanos: None,
                cache_write_per_mtok_nanos: None,
            }),
        );
    }
    apply(&mut folder, EventBody::RouteSet(RouteSet { model: MODEL.into(), strategy, fallback: Vec::new() }));
    folder
}

#[expect(clippy::print_stdout, reason = "the benchmark's report is its output")]
fn main() -> anyhow::Result<()> {
    let iterations: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let key = KeyEntry {
        key_id: "key_bench".into(),
        tenant: "acme".into(),
        models: None,
        revoked: false,
        max_output_tokens: None,
        max_n: None,
        expires_at_us: None,
    };
    let filter = ProviderFilter::default();
    println!("| strategy | lanes returned | ns per decision (median of 5 runs of {iterations}) |");
    println!("|---|---|---|");
    for strategy in [RouteStrategy::Priority, RouteStrategy::LowestCost, RouteStrategy::LeastLatency] {
        let folder = state_with(strategy);
        let state = &folder.state;
        let now = gateway::health::now_us();
        let lanes = candidates(state, &key, MODEL, &filter, 3, now).map_err(|e| anyhow::anyhow!("{e}"))?.len();
        let mut runs = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..iterations {
                let got = candidates(state, &key, MODEL, &filter, 3, now).map_err(|e| anyhow::anyhow!("{e}"))?;
                std::hint::black_box(got);
            }
            runs.push(started.elapsed().as_nanos() / u128::from(iterations));
        }
        runs.sort_unstable();
        println!("| `{}` | {lanes} | {} |", strategy.as_str(), runs[2]);
    }
    Ok(())
}
