-- The health projection (`health.checked`, stream LLMR_OPS): each probe result kept for the
-- request-log window (deleted by the projection a bounded number per batch), the last result and
-- last known balance of each resource, and an hourly rollup from which availability over
-- 24 h / 7 d / 30 d is read without touching per-probe rows. `hour` is hours since the epoch.
CREATE TABLE health_check (
    generation     BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    resource_id    TEXT NOT NULL,
    channel_id     TEXT,
    tenant         TEXT NOT NULL,
    checked_at_us  BIGINT NOT NULL,
    slot_us        BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    latency_us     BIGINT NOT NULL,
    attempts       BIGINT NOT NULL,
    balance_nanos  BIGINT,
    balance_currency TEXT,
    reason         TEXT,
    on_demand      BIGINT NOT NULL,
    PRIMARY KEY (generation, seq)
);
CREATE INDEX health_check_time ON health_check (generation, checked_at_us, seq);
CREATE INDEX health_check_resource ON health_check (generation, resource_id, checked_at_us, seq);
CREATE INDEX health_check_tenant ON health_check (generation, tenant, checked_at_us, seq);

CREATE TABLE health_latest (
    generation       BIGINT NOT NULL,
    resource_id      TEXT NOT NULL,
    channel_id       TEXT,
    tenant           TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    checked_at_us    BIGINT NOT NULL,
    outcome          TEXT NOT NULL,
    latency_us       BIGINT NOT NULL,
    reason           TEXT,
    on_demand        BIGINT NOT NULL,
    balance_nanos    BIGINT,
    balance_currency TEXT,
    balance_at_us    BIGINT,
    PRIMARY KEY (generation, resource_id)
);

CREATE TABLE health_hour (
    generation     BIGINT NOT NULL,
    resource_id    TEXT NOT NULL,
    hour           BIGINT NOT NULL,
    ok             BIGINT NOT NULL,
    failed         BIGINT NOT NULL,
    latency_us_sum BIGINT NOT NULL,
    PRIMARY KEY (generation, resource_id, hour)
);

INSERT INTO projection_generation (projection, active_generation) VALUES ('health', 1);

-- Spend per channel and UTC day, folded by the ledger projection beside its other rollups: what
-- the health view shows for a key whose vendor tells no balance (usage events name the channel,
-- not the upstream key). Filled here from the ledger rows already folded.
CREATE TABLE usage_daily_channel (
    generation BIGINT NOT NULL,
    channel_id TEXT NOT NULL,
    day        TEXT NOT NULL,
    currency   TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    PRIMARY KEY (generation, channel_id, day, currency)
);
INSERT INTO usage_daily_channel (generation, channel_id, day, currency, requests, cost_nanos)
    SELECT generation, channel_id, day, currency, COUNT(*), SUM(cost_nanos) FROM ledger
    GROUP BY generation, channel_id, day, currency;
