-- Admin users (`user.*` events): who may use the admin API, with which role and over which
-- tenant. The password hash is not stored here: logins are checked against the live control
-- model, and a read model is no place for credentials, even hashed.
CREATE TABLE users (
    generation             BIGINT NOT NULL,
    user_id                TEXT NOT NULL,
    email                  TEXT NOT NULL,
    role                   TEXT NOT NULL,
    tenant                 TEXT,
    created_at_us          BIGINT NOT NULL,
    updated_at_us          BIGINT NOT NULL,
    disabled_at_us         BIGINT,
    sessions_not_before_us BIGINT NOT NULL,
    PRIMARY KEY (generation, user_id),
    UNIQUE (generation, email)
);
CREATE INDEX users_by_tenant ON users (generation, tenant, user_id);

-- The audit trail: one row per applied control event — who (actor, and the client address for
-- changes made over HTTP), what (type and the entity's id), when, for which tenant. Secrets and
-- event data are not copied; the log keeps them.
CREATE TABLE audit (
    generation     BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    entity_id      TEXT,
    tenant         TEXT NOT NULL,
    actor          TEXT,
    actor_addr     TEXT,
    source         TEXT NOT NULL,
    occurred_at_us BIGINT NOT NULL,
    PRIMARY KEY (generation, seq)
);
CREATE INDEX audit_by_tenant ON audit (generation, tenant, seq);

-- Tenant profiles (`tenant.updated`): a display name in any script and the reports' time zone.
ALTER TABLE tenants ADD COLUMN display_name TEXT;
ALTER TABLE tenants ADD COLUMN time_zone TEXT;
