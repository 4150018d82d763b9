-- Audit entries written by a process that holds the server secret are keyed: their hash is an
-- HMAC under a key derived from it (see store/audit.py).  The first keyed entry's number is
-- written here, once; every entry from it on must be keyed, and the entries before it keep
-- verifying as they are (plain SHA-256, never re-hashed).
CREATE TABLE audit_keyed (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    from_seq  INTEGER NOT NULL
);
CREATE TRIGGER audit_keyed_no_update BEFORE UPDATE ON audit_keyed
BEGIN SELECT RAISE(ABORT, 'audit_keyed is written once'); END;
CREATE TRIGGER audit_keyed_no_delete BEFORE DELETE ON audit_keyed
BEGIN SELECT RAISE(ABORT, 'audit_keyed is written once'); END;
