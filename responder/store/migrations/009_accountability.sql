-- The accountability review (issue 16): decisions on a breach record, the interview (约谈)
-- and the correction (限期整改) they lead to.  Decisions and interviews are never changed or
-- removed: a correction of a decision is a new decision naming the one it corrects.

CREATE TABLE accountability_decisions (
    id                   INTEGER PRIMARY KEY,
    record_id            INTEGER NOT NULL REFERENCES accountability_records(id),
    action               TEXT NOT NULL CHECK (action IN ('accept', 'change', 'exempt')),
    measure              TEXT NOT NULL
                         CHECK (measure IN ('criticism', 'interview', 'correction', 'exempt')),
    proposed_measure     TEXT NOT NULL,
    proposal             TEXT NOT NULL DEFAULT '{}',  -- the ladder's grounds, as shown
    reason               TEXT NOT NULL DEFAULT '',
    correction_required  TEXT NOT NULL DEFAULT '',
    correction_due_at    TEXT,
    corrects             INTEGER UNIQUE REFERENCES accountability_decisions(id),
    evidence_digest      TEXT NOT NULL,              -- SHA-256 of the evidence decided on
    audit_seq            INTEGER NOT NULL,           -- its entry in the audit log
    decided_by           TEXT NOT NULL,
    decided_at           TEXT NOT NULL
);
-- A record's first decision is the only one that corrects nothing.
CREATE UNIQUE INDEX accountability_decisions_first
    ON accountability_decisions(record_id) WHERE corrects IS NULL;
CREATE INDEX accountability_decisions_record ON accountability_decisions(record_id, id);
CREATE TRIGGER accountability_decisions_no_update BEFORE UPDATE ON accountability_decisions
BEGIN SELECT RAISE(ABORT, 'a decision is never changed: record a correcting decision'); END;
CREATE TRIGGER accountability_decisions_no_delete BEFORE DELETE ON accountability_decisions
BEGIN SELECT RAISE(ABORT, 'a decision is never removed: record a correcting decision'); END;

CREATE TABLE accountability_interviews (
    id                   INTEGER PRIMARY KEY,
    record_id            INTEGER NOT NULL REFERENCES accountability_records(id),
    decision_id          INTEGER NOT NULL UNIQUE REFERENCES accountability_decisions(id),
    unit                 TEXT NOT NULL,
    interviewee          TEXT NOT NULL,              -- the person interviewed, and their post
    reason               TEXT NOT NULL,
    held_at              TEXT NOT NULL,
    place                TEXT NOT NULL,
    conducted_by         TEXT NOT NULL,
    correction_required  TEXT NOT NULL,
    correction_due_at    TEXT NOT NULL,
    recorded_by          TEXT NOT NULL,
    recorded_at          TEXT NOT NULL
);
CREATE TRIGGER accountability_interviews_no_update BEFORE UPDATE ON accountability_interviews
BEGIN SELECT RAISE(ABORT, 'an interview record is never changed'); END;
CREATE TRIGGER accountability_interviews_no_delete BEFORE DELETE ON accountability_interviews
BEGIN SELECT RAISE(ABORT, 'an interview record is never removed'); END;

-- A correction asked of a unit, its clock (an obligation of kind 'correction' whose steps
-- remind the unit's head), and the correction report when it comes.
CREATE TABLE accountability_corrections (
    id                   INTEGER PRIMARY KEY,
    record_id            INTEGER NOT NULL REFERENCES accountability_records(id),
    decision_id          INTEGER NOT NULL UNIQUE REFERENCES accountability_decisions(id),
    unit                 TEXT NOT NULL,
    required             TEXT NOT NULL,
    due_at               TEXT NOT NULL,
    obligation_id        INTEGER NOT NULL REFERENCES obligations(id),
    status               TEXT NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'received', 'withdrawn')),
    report_received_at   TEXT,
    report_text          TEXT,
    report_recorded_by   TEXT,
    report_recorded_at   TEXT,
    withdrawn_at         TEXT,
    created_at           TEXT NOT NULL
);
CREATE INDEX accountability_corrections_due ON accountability_corrections(due_at);
CREATE INDEX accountability_records_unit ON accountability_records(unit, breached_at);
