-- Idempotency keys for every change an integrating system can send, not only declarations:
-- the key remembers which request it was used for and the answer that request got.
ALTER TABLE idempotency_keys ADD COLUMN operation TEXT NOT NULL DEFAULT 'POST /incidents';
-- The answer of the first request, as JSON; NULL for declarations recorded before this
-- migration (answered with their incident, as before).
ALTER TABLE idempotency_keys ADD COLUMN result TEXT;
