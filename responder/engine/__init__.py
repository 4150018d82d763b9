"""The alert engine: scheduler (timers) → outbox → dispatcher (apprise), and a watchdog."""
