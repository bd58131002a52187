-- The request log (`request.logged`, stream LLMR_REQUESTS) and its quarter-hour rollup, folded
-- by the `requests` projection. Rows older than the request-log retention window are deleted by
-- the projection a bounded number per batch; the rollup is kept (it is small and is what the
-- dashboard reads). Every list filter is an index range on (generation, [filter,] time, id).
CREATE TABLE request_log (
    generation     BIGINT NOT NULL,
    request_id     TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    occurred_at_us BIGINT NOT NULL,
    tenant         TEXT NOT NULL,
    key_id         TEXT,
    endpoint       TEXT NOT NULL,
    model          TEXT,
    provider       TEXT,
    channel_id     TEXT,
    status         BIGINT NOT NULL,
    status_class   BIGINT NOT NULL,
    latency_us     BIGINT NOT NULL,
    ttft_us        BIGINT,
    attempts       BIGINT NOT NULL,
    error_class    TEXT,
    streamed       BIGINT NOT NULL,
    attempt_classes TEXT,
    PRIMARY KEY (generation, request_id)
);
CREATE INDEX request_log_time ON request_log (generation, occurred_at_us, request_id);
CREATE INDEX request_log_tenant ON request_log (generation, tenant, occurred_at_us, request_id);
CREATE INDEX request_log_key ON request_log (generation, key_id, occurred_at_us, request_id);
CREATE INDEX request_log_model ON request_log (generation, tenant, model, occurred_at_us, request_id);
CREATE INDEX request_log_channel ON request_log (generation, channel_id, occurred_at_us, request_id);
CREATE INDEX request_log_status ON request_log (generation, tenant, status, occurred_at_us, request_id);
CREATE INDEX request_log_status_class ON request_log (generation, tenant, status_class, occurred_at_us, request_id);
CREATE INDEX request_log_error ON request_log (generation, tenant, error_class, occurred_at_us, request_id);

-- Requests per tenant per quarter-hour slot (the slot of `usage_slot_key`): counts by outcome
-- and a fixed log-scale latency histogram, one row per non-empty bucket. Bucket b holds
-- latencies in [2^(b/4), 2^((b+1)/4)) microseconds, so a percentile read from it is within one
-- bucket width (a factor 2^(1/4), about 19%).
CREATE TABLE request_slot (
    generation    BIGINT NOT NULL,
    tenant        TEXT NOT NULL,
    slot          BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    succeeded     BIGINT NOT NULL,
    client_errors BIGINT NOT NULL,
    server_errors BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, slot)
);
CREATE INDEX request_slot_all ON request_slot (generation, slot);
CREATE TABLE request_slot_latency (
    generation BIGINT NOT NULL,
    tenant     TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    bucket     BIGINT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, slot, bucket)
);
CREATE INDEX request_slot_latency_all ON request_slot_latency (generation, slot);
-- The dashboard's all-tenant token and cost totals read the ledger's slots by time alone.
CREATE INDEX usage_slot_key_all ON usage_slot_key (generation, slot);

INSERT INTO projection_generation (projection, active_generation) VALUES ('requests', 1);
