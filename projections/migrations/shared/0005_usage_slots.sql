-- Usage per quarter-hour (UTC), per key, model and currency: the rollup that reports in a
-- tenant's time zone fold into local days, ISO weeks and months. Every zone offset in use is a
-- whole number of quarter-hours, so each slot lies inside one local day and the fold is exact.
-- `slot` is the quarter-hours since 1970-01-01T00:00Z. Filled by the ledger projection; rows
-- for usage folded before this migration appear after `projections rebuild ledger`.
CREATE TABLE usage_slot_key (
    generation          BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    slot                BIGINT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    currency            TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, slot, key_id, model, currency)
);
