-- Answers to admin API POSTs sent with an `Idempotency-Key`, shared by every gateway on this
-- read store so a retry to another gateway replays the first answer. Not a projection: nothing
-- in the log derives it, a rebuild leaves it alone, and rows go 24 hours after they were
-- claimed. The answer body is sealed with the master key (it may hold a new API key or a
-- generated password).
CREATE TABLE idempotency (
    user_id       TEXT NOT NULL,
    path          TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    body_hash     TEXT NOT NULL,
    claimed_at_us BIGINT NOT NULL,
    done          BIGINT NOT NULL,
    status        BIGINT,
    content_type  TEXT,
    sealed_body   TEXT,
    PRIMARY KEY (user_id, path, idem_key)
);
CREATE INDEX idempotency_claimed ON idempotency (claimed_at_us);
