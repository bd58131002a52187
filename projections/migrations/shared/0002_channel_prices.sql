-- Per-channel price overrides (`price.published` with a `channel_id`). '' is the model-wide
-- price, so the "latest per model and channel" query compares plain values on both backends
-- (NULL never equals NULL). `retired` marks the overrides of a removed channel: they stay in
-- the history (ledger rows name their price version) but are no longer in force.
ALTER TABLE prices ADD COLUMN channel_id TEXT NOT NULL DEFAULT '';
ALTER TABLE prices ADD COLUMN retired BIGINT NOT NULL DEFAULT 0;
CREATE INDEX prices_by_channel_model ON prices (generation, channel_id, model, seq);
