-- Keys granted their whole tenant's usage (`api_key.issued` with `tenant_usage`); every other key
-- reads only its own through `/v1/usage`. 0 for every key issued before the grant existed.
ALTER TABLE api_keys ADD COLUMN tenant_usage BIGINT NOT NULL DEFAULT 0;
