-- Bookkeeping of the projection runner and the first read models (control and ledger).
-- Every read-model table carries `generation`: a rebuild writes a new generation beside the
-- active one and a one-row update of projection_generation swaps them (see src/rebuild.rs).

CREATE TABLE projection_generation (
    projection          TEXT PRIMARY KEY,
    active_generation   BIGINT NOT NULL,
    building_generation BIGINT
);
INSERT INTO projection_generation (projection, active_generation) VALUES ('control', 1), ('ledger', 1);

CREATE TABLE projection_checkpoint (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    stream     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (projection, generation)
);

CREATE TABLE applied_event (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (projection, generation, event_id)
);

CREATE TABLE poison_event (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    stream     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    event_id   TEXT,
    reason     TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (projection, generation, seq)
);

CREATE TABLE tenants (
    generation    BIGINT NOT NULL,
    name          TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (generation, name)
);

CREATE TABLE api_keys (
    generation    BIGINT NOT NULL,
    key_id        TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    hash          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    name          TEXT,
    models        TEXT,
    revoked       BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT,
    PRIMARY KEY (generation, key_id),
    UNIQUE (generation, hash)
);
CREATE INDEX api_keys_by_tenant ON api_keys (generation, tenant, key_id);

CREATE TABLE channels (
    generation    BIGINT NOT NULL,
    channel_id    TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    base_url      TEXT NOT NULL,
    models        TEXT NOT NULL,
    priority      BIGINT NOT NULL,
    weight        BIGINT NOT NULL,
    enabled       BIGINT NOT NULL,
    removed       BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (generation, channel_id)
);

CREATE TABLE prices (
    generation                  BIGINT NOT NULL,
    version                     TEXT NOT NULL,
    seq                         BIGINT NOT NULL,
    model                       TEXT NOT NULL,
    currency                    TEXT NOT NULL,
    input_per_mtok_nanos        BIGINT NOT NULL,
    cached_input_per_mtok_nanos BIGINT NOT NULL,
    cache_write_per_mtok_nanos  BIGINT NOT NULL,
    output_per_mtok_nanos       BIGINT NOT NULL,
    published_at_us             BIGINT NOT NULL,
    PRIMARY KEY (generation, version)
);
CREATE INDEX prices_by_model ON prices (generation, model, seq);

CREATE TABLE ledger (
    generation          BIGINT NOT NULL,
    request_id          TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    end_user            TEXT,
    day                 TEXT NOT NULL,
    occurred_at_us      BIGINT NOT NULL,
    endpoint            TEXT NOT NULL,
    model_requested     TEXT NOT NULL,
    model_served        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    channel_id          TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    usage_source        TEXT NOT NULL,
    stream_outcome      TEXT NOT NULL,
    streamed            BIGINT NOT NULL,
    price_version       TEXT,
    currency            TEXT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (generation, request_id)
);
CREATE INDEX ledger_by_tenant_day ON ledger (generation, tenant, day);

CREATE TABLE usage_daily (
    generation          BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    day                 TEXT NOT NULL,
    model               TEXT NOT NULL,
    currency            TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, day, model, currency)
);

CREATE TABLE usage_daily_key (
    generation          BIGINT NOT NULL,
    tenant              TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    day                 TEXT NOT NULL,
    model               TEXT NOT NULL,
    currency            TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (generation, tenant, key_id, day, model, currency)
);
