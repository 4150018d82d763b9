-- As SQLite's 010: a message carried by another (one message per person, incident and moment).
ALTER TABLE notifications ADD COLUMN carried_by BIGINT REFERENCES notifications(id);
CREATE INDEX notifications_carried ON notifications(carried_by) WHERE carried_by IS NOT NULL;
