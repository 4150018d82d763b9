"""Response bodies of the API as pydantic models: every answer is validated through one of
these before it leaves, so the OpenAPI document generated from them is what the server does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from responder.errors import API_CODES

# A time in an answer: RFC 3339 with the configured zone's offset.  Said in the document so a
# generated client parses it as a time, not as text.
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Out):
    error: str = Field(
        description="stable machine-readable code, one of:\n\n"
        + "\n".join(
            f"- `{code}` ({status}): {meaning}" for code, (status, meaning) in API_CODES.items()
        )
    )
    detail: Any = Field(
        description="what is wrong: for `invalid`, a list of per-field errors"
        " `{field, problem, problem_zh, type}` (`field` empty for the body as a whole); for"
        " `token_expired`, `{expired_at}`; otherwise the English message"
    )
    message: str = Field(description="the message in Chinese (中文)")
    message_en: str


class Obligation(_Out):
    id: int
    kind: str
    seq: int
    name: str
    name_en: str
    level: str
    rule_set: str
    clock_start: str
    clock_start_at: Time | None
    within_s: int
    deadline: Time | None
    status: Literal["open", "met", "breached", "waived"]
    met_at: Time | None
    recorded_late: bool
    breached_at: Time | None
    waived_reason: str | None


class Incident(_Out):
    id: str
    title: str
    category: str
    category_name: str
    level: str
    level_name: str
    level_name_en: str
    occurred_at: Time | None
    declared_at: Time | None
    learned_at: Time | None
    location: str
    summary: str
    lead_unit: str
    co_units: list[str]
    drill: bool
    status: Literal["active", "closed"]
    rule_set: str | None
    declared_by: str
    closed_at: Time | None
    close_reason: str | None
    obligations: list[Obligation]


class IncidentList(_Out):
    total: int
    limit: int
    offset: int
    items: list[Incident]


class Met(_Out):
    obligation: str
    seq: int
    status: str
    recorded_late: bool
    overrun_s: int


class ReleaseResult(_Out):
    id: int
    met: list[Met]
    checklist_missing: list[str]
    recorded_late: bool
    incident: Incident


class PressConferenceResult(_Out):
    id: int
    after_deadline: bool = False
    met: list[Met] = Field(default_factory=list)
    recorded_late: bool = False
    incident: Incident


class LevelChangeResult(_Out):
    from_level: str = Field(alias="from")
    to: str
    added: list[str] = Field(
        description="obligations the new level adds; one a lowering had waived comes back"
        " with the deadline it had"
    )
    waived: list[str]
    breached: list[str] = Field(
        description="overdue obligations breached by this change (also one that comes back"
        " past its deadline)"
    )
    incident: Incident

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CloseResult(_Out):
    waived: list[str]
    breached: list[str]
    incident: Incident


class TimelineEntry(_Out):
    seq: int
    at: Time | None
    actor: str
    action: str
    data: dict[str, Any]


class Attempt(_Out):
    channel: str
    started_at: Time | None
    finished_at: Time | None
    outcome: str
    error: str | None = Field(description="what the channel or the service reported (technical)")
    error_message: str | None = Field(description="what it means, in Chinese (中文)")
    error_message_en: str | None


class Notification(_Out):
    id: int
    obligation: str | None
    kind: str
    person: str
    person_name: str
    phone: str | None
    email: str | None
    channels: list[str]
    status: str
    sent_channel: str | None
    created_at: Time | None
    sent_at: Time | None
    acknowledged_at: Time | None
    last_error: str | None
    last_error_message: str | None = Field(description="what it means, in Chinese (中文)")
    last_error_message_en: str | None
    rounds_failed: int = Field(description="rounds over every channel that failed")
    retry_at: Time | None = Field(
        description="failed on every channel: when it is tried again (null: not again)"
    )
    retry_ended: str | None = Field(
        description="failed, and tried no more because: acknowledged, obligation met,"
        " obligation waived, incident closed, a later alert was delivered, delivered on"
        " another channel, expired"
    )
    delivery_message: str | None = Field(
        description="a failed delivery in words, in Chinese (中文): whether and when it is"
        " tried again"
    )
    delivery_message_en: str | None
    attempts: list[Attempt]


class RecordNotification(_Out):
    person: str
    kind: str
    status: str
    channel: str | None
    sent_at: Time | None
    acknowledged_at: Time | None


class AccountabilityRecordSummary(_Out):
    """A record as the list gives it; who was told is in ``GET /accountability/{id}``."""

    id: int
    incident_id: str
    obligation_id: int
    unit: str
    responsible_person: str | None
    deadline: Time | None
    breached_at: Time | None
    met_at: Time | None
    overrun_s: int | None
    evidence: dict[str, Any]
    proposed_measure: str | None
    decided_measure: str | None
    decision_reason: str | None
    decided_by: str | None
    decided_at: Time | None
    status: str


class AccountabilityRecord(AccountabilityRecordSummary):
    """One record, with every message about its obligation: who was told, when, and whether
    they acknowledged."""

    notifications: list[RecordNotification]


class PlanObligation(_Out):
    kind: str
    seq: int
    name: str
    name_en: str
    clock_start: str
    clock_start_at: Time | None
    within: str
    within_s: int
    deadline: Time | None
    status: str


class PlanStep(_Out):
    obligation: str
    seq: int
    name: str
    kind: str
    due_at: Time | None
    nominal_at: Time | None
    audience: list[str]
    channels: list[str]
    breach: bool
    repeat_every_s: int | None
    collapsed: list[str]


class PlanAfterRelease(_Out):
    kind: str
    name: str
    name_en: str
    within: str
    within_s: int


class PlanRuleSet(_Out):
    id: str
    title: str
    title_en: str


class Plan(_Out):
    level: str
    level_name: str
    level_name_en: str
    occurred_at: Time | None
    declared_at: Time | None
    timezone: str
    rule_set: PlanRuleSet | None
    after_release: list[PlanAfterRelease]
    obligations: list[PlanObligation]
    steps: list[PlanStep]


def for_deployment(document: dict[str, Any], unit_ids: list[str]) -> dict[str, Any]:
    """The OpenAPI document with what this deployment's configuration decides: a field marked
    ``x-unit`` (responder.models.UnitId) takes one of the configured units' ids, and says so
    (``enum``), so that a client generated from the document sends a unit the service knows."""

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            out = {key: fill(value) for key, value in node.items() if key != "x-unit"}
            if node.get("x-unit"):
                out["enum"] = list(unit_ids)
                out["description"] = "a unit's id, as the configuration lists them"
            return out
        if isinstance(node, list):
            return [fill(item) for item in node]
        return node

    return fill(document)  # type: ignore[no-any-return]


# -- the accountability review ----------------------------------------------------------------


class ReviewRecord(_Out):
    """A record complete, as a reviewer reads it before deciding (see ``GET
    /accountability/{record_id}/review``)."""

    id: int
    state: Literal["open", "decided"]
    incident_id: str
    incident_title: str
    incident_level: str
    incident_level_name: str
    incident_level_name_en: str
    drill: bool
    obligation_id: int
    obligation: str
    obligation_name: str
    obligation_name_en: str
    rule_set: str
    rule_set_title: str
    rule_set_title_en: str
    clause: str = Field(description="the clause that set the limit, as it read at the breach")
    within: str
    within_en: str
    unit: str
    unit_name: str
    unit_name_en: str
    responsible_person: dict[str, Any] | None
    deadline: Time | None
    deadline_local: str
    breached_at: Time | None
    quarter: str | None
    met_at: Time | None
    met_at_local: str
    met_recorded_at: Time | None
    still_open: bool
    overrun_s: int = Field(description="to when it was met; still open: to now")
    overrun: str
    overrun_en: str
    recorded_late: bool
    recording_delay_s: int | None
    met_in_time_recorded_after_breach: bool = Field(
        description="met before the deadline, recorded after the breach: likely no fault"
    )
    decided_measure: str | None
    decided_measure_name: str | None
    decided_measure_name_en: str | None
    proposal: dict[str, Any] = Field(
        description="the ladder's proposal: measure, grounds (zh/en), prior_records, overrun_s,"
        " correction_within_s"
    )
    decisions: list[dict[str, Any]] = Field(
        description="every decision, oldest first; a correction names the decision it corrects"
        " (`corrects`), which stays with `corrected_by`"
    )
    interviews: list[dict[str, Any]]
    corrections: list[dict[str, Any]] = Field(
        description="state: open, overdue, received, received_late, withdrawn"
    )
    evidence: dict[str, Any] = Field(
        description="`summary` (messages, delivered, failed, attempts, acknowledged…) and"
        " `timeline`: every step, message, attempt, delivery, acknowledgement and milestone,"
        " with its time and its row (`source`, table:id)"
    )


class ReviewResult(_Out):
    id: int
    record_id: int
    measure: str | None = None
    audit_seq: int | None = None
    correction_id: int | None = None
    in_time: bool | None = None
    record: ReviewRecord


class AuditStatement(_Out):
    verified: bool
    problem: str
    problems: list[str]
    head: str | None = Field(description="N:HASH, the report's own audit entry")
    check: str = Field(description="the command that checks it later")


class Report(BaseModel):
    """A report as JSON: ``report`` says which (incident, quarterly); ``audit`` whether the
    chain verified when it was made, and its head."""

    model_config = ConfigDict(extra="allow")
    report: Literal["incident", "quarterly"]
    made_at: str
    audit: AuditStatement
