-- When the administrators were told that a token ends within a week (once per token).
ALTER TABLE tokens ADD COLUMN end_warned_at TEXT;
