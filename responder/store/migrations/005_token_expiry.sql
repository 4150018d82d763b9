-- A token may be given an end: after expires_at it no longer identifies anyone.  NULL: until
-- revoked (every token made before this migration).
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
