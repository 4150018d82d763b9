-- Alerts keep trying while they matter, and urgent ones go first.
--
-- A message that failed on every channel stays 'failed' (shown so) but is not final while it
-- still matters: retry_at says when its next round over the person's channels starts.  NULL:
-- no further round (never failed, delivered, or moot: retry_ended says why).
ALTER TABLE notifications ADD COLUMN retry_at TEXT;
-- Rounds over every channel that failed.  The administrators are told when the first one
-- fails, never again for the same message.
ALTER TABLE notifications ADD COLUMN rounds INTEGER NOT NULL DEFAULT 0;
-- Why a failed message is tried no more: 'acknowledged', 'obligation met', 'obligation waived',
-- 'incident closed', 'a later alert was delivered'; for a message about the service,
-- 'delivered on another channel' or 'expired'.
ALTER TABLE notifications ADD COLUMN retry_ended TEXT;
-- Claim order: 0 the service speaking about itself (watchdog), 1 a breach (deadline passed),
-- 2 routine reminders.  During a catch-up of many messages the administrators' "alerts are
-- late" and the breach alerts are not queued behind the reminders.
ALTER TABLE notifications ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;
UPDATE notifications SET priority = CASE
    WHEN kind = 'watchdog' THEN 0
    WHEN kind IN ('deadline', 'repeat') THEN 1
    ELSE 2 END;
-- The claim reads this index in order: the most urgent due message is its first entry.
CREATE INDEX notifications_claim ON notifications(priority, next_attempt_at)
    WHERE status = 'queued';
-- The next round due, and the failed messages still being tried (/healthz): a few rows.
CREATE INDEX notifications_retry ON notifications(retry_at) WHERE retry_at IS NOT NULL;
CREATE INDEX notifications_failing ON notifications(person_id)
    WHERE rounds > 0 AND status IN ('queued', 'sending', 'failed');
