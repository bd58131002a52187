-- Coarser tiers of the usage and request rollups, so that reports and dashboard statistics read
-- a bounded number of rows however many keys and requests a period holds: whole UTC months and
-- days from the coarse tables, quarter-hours only for the UTC days a local period boundary cuts.
-- Rows of tenant `*` hold the sum over every tenant (tenant names are a-z, 0-9, '-' and '_', so
-- `*` never names one): the all-tenant dashboard reads them instead of every tenant's rows.
-- Each table is filled here from the rollups already folded, and by the projections from now on.

-- Usage per tenant (and `*`), quarter-hour, model and currency: usage_slot_key without the key.
CREATE TABLE usage_slot (
    generation          BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    slot                BIGINT NOT NULL,
    model               TEXT NOT NULL,
    currency            TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, slot, model, currency)
);
INSERT INTO usage_slot (generation, tenant, slot, model, currency, requests, input_tokens, cached_input_tokens,
        cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos)
    SELECT generation, tenant, slot, model, currency, SUM(requests), SUM(input_tokens), SUM(cached_input_tokens),
        SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos)
    FROM usage_slot_key GROUP BY generation, tenant, slot, model, currency;
INSERT INTO usage_slot (generation, tenant, slot, model, currency, requests, input_tokens, cached_input_tokens,
        cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos)
    SELECT generation, '*', slot, model, currency, SUM(requests), SUM(input_tokens), SUM(cached_input_tokens),
        SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos)
    FROM usage_slot_key GROUP BY generation, slot, model, currency;

-- The daily usage of every tenant, as tenant `*`.
INSERT INTO usage_daily (generation, tenant, day, model, currency, requests, input_tokens, cached_input_tokens,
        cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos)
    SELECT generation, '*', day, model, currency, SUM(requests), SUM(input_tokens), SUM(cached_input_tokens),
        SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos)
    FROM usage_daily WHERE tenant <> '*' GROUP BY generation, day, model, currency;

-- Usage per key, UTC month (`2026-11`), model and currency: a report by key over whole months
-- reads one row per key and model a month.
CREATE TABLE usage_month_key (
    generation          BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    month               TEXT NOT NULL,
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
    PRIMARY KEY (generation, tenant, month, key_id, model, currency)
);
INSERT INTO usage_month_key (generation, tenant, month, key_id, model, currency, requests, input_tokens,
        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos)
    SELECT generation, tenant, SUBSTR(day, 1, 7), key_id, model, currency, SUM(requests), SUM(input_tokens),
        SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos)
    FROM usage_daily_key GROUP BY generation, tenant, SUBSTR(day, 1, 7), key_id, model, currency;

-- A tenant's days of usage_daily_key are one index range (its key is by key first).
CREATE INDEX usage_daily_key_day ON usage_daily_key (generation, tenant, day);

-- Every tenant's requests per quarter-hour, as tenant `*`.
INSERT INTO request_slot (generation, tenant, slot, requests, succeeded, client_errors, server_errors)
    SELECT generation, '*', slot, SUM(requests), SUM(succeeded), SUM(client_errors), SUM(server_errors)
    FROM request_slot WHERE tenant <> '*' GROUP BY generation, slot;
INSERT INTO request_slot_latency (generation, tenant, slot, bucket, requests)
    SELECT generation, '*', slot, bucket, SUM(requests)
    FROM request_slot_latency WHERE tenant <> '*' GROUP BY generation, slot, bucket;

-- Requests per tenant (and `*`) and UTC day (`day` counts days since 1970-01-01, the slot's
-- day: slot / 96), and the day's latency histogram.
CREATE TABLE request_day (
    generation    BIGINT NOT NULL,
    tenant        TEXT NOT NULL,
    day           BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    succeeded     BIGINT NOT NULL,
    client_errors BIGINT NOT NULL,
    server_errors BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, day)
);
INSERT INTO request_day (generation, tenant, day, requests, succeeded, client_errors, server_errors)
    SELECT generation, tenant, slot / 96, SUM(requests), SUM(succeeded), SUM(client_errors), SUM(server_errors)
    FROM request_slot GROUP BY generation, tenant, slot / 96;
CREATE TABLE request_day_latency (
    generation BIGINT NOT NULL,
    tenant     TEXT NOT NULL,
    day        BIGINT NOT NULL,
    bucket     BIGINT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, day, bucket)
);
INSERT INTO request_day_latency (generation, tenant, day, bucket, requests)
    SELECT generation, tenant, slot / 96, bucket, SUM(requests)
    FROM request_slot_latency GROUP BY generation, tenant, slot / 96, bucket;
