"""Errors a person can read: a stable code, Chinese first, English available."""

from __future__ import annotations

from typing import Any


class ResponderError(Exception):
    """Base for every refusal.  ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, code: str, zh: str, en: str, detail: Any = None) -> None:
        super().__init__(zh)
        self.code = code
        self.zh = zh
        self.en = en
        self.detail = detail

    def message(self, lang: str = "zh") -> str:
        return self.en if lang == "en" else self.zh

    def __str__(self) -> str:
        return f"{self.zh} / {self.en}"


class BadInput(ResponderError):
    status = 422


class NotFound(ResponderError):
    status = 404


class Conflict(ResponderError):
    """The request is well formed but the incident's state forbids it (e.g. it is closed)."""

    status = 409


class Unavailable(ResponderError):
    """Not the request's fault: the database cannot take it now (another program holds it
    locked, the disk is full, the database is read-only).  Nothing was changed, and the same
    request may succeed later: the API answers 503 with ``Retry-After``."""

    status = 503

    def __init__(self, code: str, zh: str, en: str, retry_after: int, detail: Any = None) -> None:
        super().__init__(code, zh, en, detail)
        self.retry_after = retry_after


class ConfigError(Exception):
    """A configuration problem: names the file, the key and what is wrong."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


# Every code the API answers with, its HTTP status and what it means: the OpenAPI document
# lists them (schema ``Error``), so an integrator can handle each without reading our source.
# tests/test_api.py checks this table against the codes the source really raises.
API_CODES: dict[str, tuple[int, str]] = {
    # the request itself
    "bad_json": (400, "the body is not JSON, not UTF-8, nests too deeply, or gives a field twice"),
    "bad_idempotency_key": (
        400,
        "Idempotency-Key is given twice, or is not 1–255 visible ASCII characters",
    ),
    "bad_request": (400, "the request is malformed (or has two Authorization headers)"),
    "unauthorized": (401, "no valid bearer token"),
    "token_expired": (401, "the token has ended (detail.expired_at); ask for a new one"),
    "forbidden": (403, "the token's role may not do this"),
    "not_found": (404, "no such address"),
    "method_not_allowed": (405, "the address does not take this method"),
    "too_large": (413, "the body is over 256 KiB"),
    "unsupported_media_type": (415, "the body is not application/json"),
    "unsupported_encoding": (415, "the body's Content-Encoding is not gzip or deflate"),
    "invalid": (422, "fields are missing or not valid (detail lists each)"),
    "duplicate_parameter": (422, "a query parameter is given more than once"),
    "bad_id": (422, "an id in the address is malformed"),
    "bad_time": (422, "a time is not RFC 3339 (in a URL, write the offset's + as %2B)"),
    "naive_time": (422, "a time has no offset"),
    "time_out_of_range": (422, "a time is outside the years 1900–2999"),
    "time_in_future": (422, "a time is later than now (or than the declaration)"),
    "idempotency_key_reused": (422, "the Idempotency-Key was used for a different request"),
    # the incident and its records
    "incident_not_found": (404, "no such incident"),
    "press_conference_not_found": (404, "the incident has no such press conference"),
    "record_not_found": (404, "no such accountability record"),
    "unknown_unit": (422, "a unit is not in the configuration (the message lists them)"),
    "learned_before_occurred": (422, "learned_at is before occurred_at"),
    "before_occurrence": (422, "a time is before the incident occurred"),
    "scheduled_in_past": (422, "the press conference time has passed; record it as held"),
    "same_level": (422, "the incident is already at that level"),
    "incident_closed": (409, "the incident is closed; nothing can be changed"),
    "already_released": (409, "the authoritative release is recorded; record a follow-up"),
    "release_not_recorded": (409, "record the authoritative release before a follow-up"),
    "release_already_recorded": (409, "a release at that time is already recorded"),
    "release_out_of_order": (409, "a follow-up is dated before the last release recorded"),
    "already_scheduled": (409, "a press conference is already scheduled; reschedule it"),
    "not_scheduled": (409, "only a scheduled press conference can be rescheduled"),
    "already_held": (409, "that press conference is already recorded as held"),
    # the service
    "database_busy": (
        503,
        "another program held the database locked for longer than the service waits; nothing"
        " was changed: send the same request again after Retry-After seconds",
    ),
    "storage_unavailable": (
        503,
        "the database cannot be written (its disk is full, or it is read-only or failing);"
        " nothing was changed: send the same request again after Retry-After seconds",
    ),
    # the accountability review
    "already_decided": (409, "the record is decided; correct it with `corrects`"),
    "not_decided": (409, "the record has no decision to correct"),
    "not_current_decision": (409, "`corrects` must name the record's current decision"),
    "correction_required_missing": (422, "a correction (限期整改) needs correction_required"),
    "correction_due_in_past": (422, "the correction deadline is not after now"),
    "no_interview_decided": (409, "the current decision is not an interview (约谈)"),
    "interview_recorded": (409, "the interview is already recorded; it is never changed"),
    "correction_due_before_interview": (422, "the correction deadline is before the interview"),
    "no_open_correction": (409, "the record has no correction waiting for its report"),
    "report_before_correction": (422, "the report is dated before the correction was asked"),
    "internal": (500, "a fault of the service (the message gives its reference)"),
}
# Raised elsewhere: the command line (one line on stderr, exit 1) and the pages.
NOT_API_CODES = {
    "unknown_role", "bad_username", "weak_password", "user_exists", "user_not_found",
    "user_disabled", "token_not_found", "token_expiry_not_in_future", "bad_token_days",
    "already_running", "cannot_listen", "database_unavailable", "database_too_new",
    "secret_unavailable", "templates_missing", "channel_not_understood", "no_password",
    "ack_not_found", "too_many_requests", "bad_form", "stale_form", "dev_inbox_closed",
    "form_used",
    "bad_quarter",
}  # fmt: skip
