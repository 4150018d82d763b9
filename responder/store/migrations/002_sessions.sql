-- Page login sessions, so that signing out (or disabling a user) ends a session at once
-- instead of when its signed cookie expires.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,          -- random, also inside the signed cookie
    user_id     INTEGER NOT NULL REFERENCES users(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
