-- One message per person, incident and moment (issue 15): what falls due for the same person
-- and incident in the same firing goes out as ONE message listing each obligation.  Each
-- obligation keeps its own notification row (its evidence, its acknowledgement); the rows of
-- the obligations a message carries besides its own name it here.  The dispatcher sends only
-- the carrier; a carried row follows its carrier's state (sent, failed, acknowledged).
ALTER TABLE notifications ADD COLUMN carried_by INTEGER REFERENCES notifications(id);
CREATE INDEX notifications_carried ON notifications(carried_by) WHERE carried_by IS NOT NULL;
