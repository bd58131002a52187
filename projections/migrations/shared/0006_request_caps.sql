-- Request caps and expiry (`api_key.issued` with `max_output_tokens`, `max_n`, `expires_at_us`;
-- `tenant.updated` with `max_output_tokens`, `max_n`). NULL: no cap, never expires.
ALTER TABLE api_keys ADD COLUMN max_output_tokens BIGINT;
ALTER TABLE api_keys ADD COLUMN max_n BIGINT;
ALTER TABLE api_keys ADD COLUMN expires_at_us BIGINT;
ALTER TABLE tenants ADD COLUMN max_output_tokens BIGINT;
ALTER TABLE tenants ADD COLUMN max_n BIGINT;
