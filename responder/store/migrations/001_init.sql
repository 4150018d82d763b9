-- responder schema, version 1.  All times are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (sortable).

CREATE TABLE incidents (
    id            TEXT PRIMARY KEY,             -- INC-20261126-0001
    title         TEXT NOT NULL,
    category      TEXT NOT NULL,
    level         TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    declared_at   TEXT NOT NULL,
    learned_at    TEXT,
    location      TEXT NOT NULL DEFAULT '',
    summary       TEXT NOT NULL DEFAULT '',
    lead_unit     TEXT NOT NULL,
    co_units      TEXT NOT NULL DEFAULT '[]',   -- JSON list of unit ids
    drill         INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    rule_set_id   TEXT,                         -- the rule set in force at occurred_at
    declared_by   TEXT NOT NULL,
    closed_at     TEXT,
    close_reason  TEXT
);
CREATE INDEX incidents_status ON incidents(status, declared_at);

CREATE TABLE level_changes (
    id           INTEGER PRIMARY KEY,
    incident_id  TEXT NOT NULL REFERENCES incidents(id),
    from_level   TEXT NOT NULL,
    to_level     TEXT NOT NULL,
    changed_at   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    changed_by   TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
);

CREATE TABLE obligations (
    id                INTEGER PRIMARY KEY,
    incident_id       TEXT NOT NULL REFERENCES incidents(id),
    kind              TEXT NOT NULL,
    seq               INTEGER NOT NULL DEFAULT 1,
    name              TEXT NOT NULL,
    name_en           TEXT NOT NULL,
    milestone         TEXT NOT NULL,
    level             TEXT NOT NULL,
    rule_set_id       TEXT NOT NULL,
    clock_start_kind  TEXT NOT NULL,
    clock_start_at    TEXT NOT NULL,
    within_s          INTEGER NOT NULL,
    deadline          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('open', 'met', 'breached', 'waived')),
    met_at            TEXT,                   -- when the milestone actually happened
    met_recorded_at   TEXT,                   -- when it was typed in
    recorded_late     INTEGER NOT NULL DEFAULT 0,
    breached_at       TEXT,
    waived_at         TEXT,
    waived_reason     TEXT,
    created_at        TEXT NOT NULL
);
CREATE INDEX obligations_incident ON obligations(incident_id, kind, seq);

-- Timers: every alert step lives here before it acts.  'pending' rows are the schedule.
CREATE TABLE steps (
    id              INTEGER PRIMARY KEY,
    incident_id     TEXT NOT NULL REFERENCES incidents(id),
    obligation_id   INTEGER NOT NULL REFERENCES obligations(id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    nominal_at      TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    audience        TEXT NOT NULL,            -- JSON list of role@selector
    channels        TEXT NOT NULL DEFAULT '[]',
    is_deadline     INTEGER NOT NULL DEFAULT 0,
    repeat_s        INTEGER,
    collapsed       TEXT NOT NULL DEFAULT '[]',
    all_channels    INTEGER NOT NULL DEFAULT 0,  -- every channel at once, not failover
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'fired', 'cancelled')),
    fired_at        TEXT,
    cancelled_at    TEXT
);
-- "The next due step" is one index probe: only pending rows are in it.
CREATE INDEX steps_next_due ON steps(due_at) WHERE status = 'pending';
CREATE INDEX steps_obligation ON steps(obligation_id, status);

CREATE TABLE releases (
    id              INTEGER PRIMARY KEY,
    incident_id     TEXT NOT NULL REFERENCES incidents(id),
    kind            TEXT NOT NULL CHECK (kind IN ('authoritative', 'follow_up')),
    published_at    TEXT NOT NULL,
    channels        TEXT NOT NULL DEFAULT '[]',
    url             TEXT NOT NULL DEFAULT '',
    text            TEXT NOT NULL DEFAULT '',
    checklist       TEXT NOT NULL DEFAULT '{}',
    recorded_at     TEXT NOT NULL,
    recorded_by     TEXT NOT NULL,
    recorded_late   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX releases_incident ON releases(incident_id, published_at);

CREATE TABLE press_conferences (
    id                       INTEGER PRIMARY KEY,
    incident_id              TEXT NOT NULL REFERENCES incidents(id),
    status                   TEXT NOT NULL CHECK (status IN ('scheduled', 'held', 'cancelled')),
    scheduled_at             TEXT,
    venue                    TEXT NOT NULL DEFAULT '',
    spokesperson             TEXT NOT NULL DEFAULT '',
    held_at                  TEXT,
    principal_leader_spoke   INTEGER,
    notes                    TEXT NOT NULL DEFAULT '',
    recorded_at              TEXT NOT NULL,
    recorded_by              TEXT NOT NULL,
    recorded_late            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX press_conferences_incident ON press_conferences(incident_id);

-- The outbox: one message to one person; the channel moves down the person's failover list.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    incident_id     TEXT REFERENCES incidents(id),   -- NULL for a watchdog message about the service
    obligation_id   INTEGER REFERENCES obligations(id),
    step_id         INTEGER REFERENCES steps(id),
    person_id       TEXT NOT NULL,
    channels        TEXT NOT NULL,            -- JSON list: this message's failover order
    channel_index   INTEGER NOT NULL DEFAULT 0,
    attempt         INTEGER NOT NULL DEFAULT 0, -- attempts on the current channel
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    kind            TEXT NOT NULL,            -- the step kind, or 'watchdog'
    context         TEXT NOT NULL DEFAULT '{}', -- facts frozen at queue time
    due_at          TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    sent_channel    TEXT,
    last_error      TEXT,
    ack_nonce       TEXT NOT NULL,            -- with the server secret, derives the ack token
    ack_hash        TEXT UNIQUE,              -- sha256 of the token: the only form stored
    acked_at        TEXT
);
CREATE INDEX notifications_due ON notifications(next_attempt_at) WHERE status = 'queued';
CREATE INDEX notifications_incident ON notifications(incident_id, created_at);
CREATE INDEX notifications_person ON notifications(obligation_id, person_id);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    notification_id  INTEGER NOT NULL REFERENCES notifications(id),
    channel          TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    outcome          TEXT NOT NULL DEFAULT 'started'
                     CHECK (outcome IN ('started', 'sent', 'error', 'unknown')),
    error            TEXT
);
CREATE INDEX attempts_notification ON attempts(notification_id);

CREATE TABLE accountability_records (
    id                  INTEGER PRIMARY KEY,
    incident_id         TEXT NOT NULL REFERENCES incidents(id),
    obligation_id       INTEGER NOT NULL UNIQUE REFERENCES obligations(id),
    unit                TEXT NOT NULL,
    responsible_person  TEXT,
    deadline            TEXT NOT NULL,
    breached_at         TEXT NOT NULL,
    met_at              TEXT,
    overrun_s           INTEGER,
    evidence            TEXT NOT NULL DEFAULT '{}',
    proposed_measure    TEXT,
    decided_measure     TEXT,
    decision_reason     TEXT,
    decided_by          TEXT,
    decided_at          TEXT,
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'decided')),
    created_at          TEXT NOT NULL
);

-- Append-only, hash-chained: each entry's hash covers the previous entry's hash.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL DEFAULT '',
    role           TEXT NOT NULL CHECK (role IN ('duty_officer', 'reviewer', 'admin', 'viewer')),
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    last_used_at  TEXT
);

CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
