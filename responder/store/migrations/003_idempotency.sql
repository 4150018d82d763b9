-- Idempotency keys for declarations: a client that retries POST /api/v1/incidents with the
-- same Idempotency-Key gets the incident it declared the first time, never a second one.
CREATE TABLE idempotency_keys (
    actor         TEXT NOT NULL,           -- who sent it: keys of different users never meet
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,           -- SHA-256 of the declaration as validated
    incident_id   TEXT NOT NULL REFERENCES incidents(id),
    created_at    TEXT NOT NULL,
    PRIMARY KEY (actor, key)
);
