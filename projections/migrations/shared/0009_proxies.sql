-- Egress proxies (`proxy.added`, `proxy.removed`, `proxy.state_changed`) and the pool a channel
-- sends through (`channel.added`/`channel.updated` `proxy_pool`). Only the masked URL is kept
-- (`scheme://***@host:port` when the proxy has credentials): a read model holds no secrets, not
-- even sealed ones. Number 0009: 0008 is taken by another line of work.
CREATE TABLE proxies (
    generation    BIGINT NOT NULL,
    proxy_id      TEXT NOT NULL,
    pool          TEXT NOT NULL,
    name          TEXT NOT NULL,
    masked_url    TEXT NOT NULL,
    has_credentials BIGINT NOT NULL,
    from_pool_url BIGINT NOT NULL,
    state         TEXT NOT NULL,
    until_us      BIGINT,
    reason        TEXT,
    opens         BIGINT NOT NULL,
    removed       BIGINT NOT NULL,
    added_at_us   BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (generation, proxy_id)
);

CREATE INDEX proxies_by_pool ON proxies (generation, pool, proxy_id);

ALTER TABLE channels ADD COLUMN proxy_pool TEXT;
