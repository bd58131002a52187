-- Proxy health probes and failure streaks that survive a restart of the health worker:
-- `proxies.manual` marks a proxy an admin disabled (probes never enable it), and
-- `health_latest.failures` counts the failed scheduled probes in a row of each resource (an
-- admin's check never moves it; for a key, a probe whose proxies failed leaves it as it was).
-- The worker starts its streaks from it. Number 0012: 0011 is taken by another line of work.
ALTER TABLE proxies ADD COLUMN manual BIGINT NOT NULL DEFAULT 0;
ALTER TABLE health_latest ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
