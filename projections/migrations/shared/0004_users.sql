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
