"""Rule sets: effective-dated obligations per level, loaded from TOML in ``config/rules/``.

A rule set is data, never code: the national 5 h / 24 h rule of 国办发〔2016〕80号 and an earlier
local 6 h / 24 h variant are two files.  The rule set in force when an incident *occurred*
governs it (the latest ``effective_from`` not after ``occurred_at``, and before ``effective_until``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from responder.timeutil import config_duration, within_bounds

LEVELS = ("I", "II", "III", "IV")
LEVEL_NAMES = {"I": "特别重大", "II": "重大", "III": "较大", "IV": "一般"}
LEVEL_NAMES_EN = {
    "I": "especially major",
    "II": "major",
    "III": "relatively major",
    "IV": "general",
}
LEVEL_RANK = {"I": 4, "II": 3, "III": 2, "IV": 1}

ClockStart = Literal[
    "occurred_at", "declared_at", "learned_at", "level_changed_at", "previous_release"
]
Anchor = Literal["declared", "clock_start", "deadline"]

# "head@lead", "spokesperson@co", "duty_officer@#office", "leader@gov-office"
_AUDIENCE = re.compile(r"^[a-z_]+@(lead|co|involved|#[a-z0-9_-]+|[a-z0-9_-]+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The longest time limit or step offset a rule may give: a year.  Statutory limits are hours
# or days; anything longer is a typo, and a far one overflows the planner's dates.
MAX_SPAN = timedelta(days=366)


class StepRule(_Strict):
    """One point on an obligation's clock, with who is told and how."""

    name: str
    anchor: Anchor = "deadline"
    offset: timedelta = timedelta(0)
    audience: tuple[str, ...]
    # Preferred channel kinds, in order; empty = the person's own order.
    channels: tuple[str, ...] = ()
    # Only on the step at the deadline: again every `repeat` until the obligation is met.
    repeat: timedelta | None = None
    # Send on every channel the person has at once, instead of one after another on failure:
    # for the breach alert, which must reach the phone and leave a written record.
    all_channels: bool = False

    @field_validator("offset", "repeat", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return config_duration(v)

    @field_validator("audience")
    @classmethod
    def _audience(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            if not _AUDIENCE.match(a):
                raise ValueError(
                    f"audience '{a}' must look like role@lead, role@co, role@involved, "
                    "role@#tag or role@unit-id"
                )
        if not v:
            raise ValueError("a step needs at least one audience")
        return v

    @field_validator("offset")
    @classmethod
    def _offset(cls, v: timedelta) -> timedelta:
        return within_bounds(v, -MAX_SPAN, MAX_SPAN)

    @model_validator(mode="after")
    def _repeat_only_at_deadline(self) -> StepRule:
        if self.repeat is not None:
            if self.anchor != "deadline" or self.offset != timedelta(0):
                raise ValueError("repeat is allowed only on the step at the deadline (offset 0)")
            # Not every few seconds (a storm of calls), not once a year (never again).
            within_bounds(self.repeat, timedelta(minutes=1), timedelta(days=7))
        if self.anchor == "deadline" and self.offset > timedelta(0):
            raise ValueError(
                "steps after the deadline are expressed with repeat, not a positive offset"
            )
        return self


class ObligationRule(_Strict):
    kind: str
    name: str
    name_en: str
    levels: tuple[str, ...]
    within: timedelta
    clock_start: ClockStart = "occurred_at"
    # When a level is raised into this obligation: count from the raise, or still from the clock start.
    on_raise: Literal["level_changed_at", "clock_start"] = "level_changed_at"
    # The milestone that meets it: authoritative_release, press_conference or follow_up_release.
    milestone: Literal["authoritative_release", "press_conference", "follow_up_release"]
    escalation: str = "default"
    basis: str = ""

    @field_validator("within", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return config_duration(v)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for level in v:
            if level not in LEVELS:
                raise ValueError(f"unknown level '{level}' (use I, II, III or IV)")
        return v

    @model_validator(mode="after")
    def _check(self) -> ObligationRule:
        if self.within <= timedelta(0):
            raise ValueError("within must be positive")
        if self.within > MAX_SPAN:  # "100000000h" overflowed the planner's dates
            raise ValueError(f"within must be at most {MAX_SPAN.days} days")
        if (self.clock_start == "previous_release") != (self.milestone == "follow_up_release"):
            raise ValueError("clock_start previous_release goes with milestone follow_up_release")
        return self


class RuleSet(_Strict):
    id: str
    title: str
    title_en: str = ""
    jurisdiction: str = ""
    effective_from: datetime
    effective_until: datetime | None = None
    basis: str = ""
    obligations: tuple[ObligationRule, ...] = Field(default=())
    escalations: dict[str, tuple[StepRule, ...]]

    @field_validator("effective_from", "effective_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and (v.tzinfo is None or v.utcoffset() is None):
            raise ValueError("effective dates need an offset, e.g. 2016-11-10T00:00:00+08:00")
        return v

    @model_validator(mode="after")
    def _check(self) -> RuleSet:
        kinds = [o.kind for o in self.obligations]
        if len(kinds) != len(set(kinds)):
            raise ValueError("obligation kinds must be unique within a rule set")
        for o in self.obligations:
            if o.escalation not in self.escalations:
                raise ValueError(f"obligation '{o.kind}' names unknown escalation '{o.escalation}'")
        for name, steps in self.escalations.items():
            names = [s.name for s in steps]
            if len(names) != len(set(names)):
                raise ValueError(f"escalation '{name}': step names must be unique")
            reserved = {"catch_up", "repeat"} & set(names)
            if reserved:  # the planner and the engine name the steps they make so
                raise ValueError(f"escalation '{name}': step name '{reserved.pop()}' is reserved")
            # Firing the step at the deadline is what breaches the obligation: without one a
            # missed deadline would never be recorded; with two, it would alert (and repeat) twice.
            at_deadline = [s for s in steps if s.anchor == "deadline" and not s.offset]
            if len(at_deadline) != 1:
                raise ValueError(
                    f"escalation '{name}' needs exactly one step at the deadline"
                    f" (anchor deadline, offset 0); it has {len(at_deadline)}"
                )
        if self.effective_until is not None and self.effective_until <= self.effective_from:
            raise ValueError("effective_until must be after effective_from")
        return self

    def for_level(self, level: str) -> tuple[ObligationRule, ...]:
        return tuple(o for o in self.obligations if level in o.levels)

    def obligation(self, kind: str) -> ObligationRule | None:
        return next((o for o in self.obligations if o.kind == kind), None)

    def in_force_at(self, t: datetime) -> bool:
        return self.effective_from <= t and (
            self.effective_until is None or t < self.effective_until
        )


def rule_set_in_force(
    rule_sets: list[RuleSet] | tuple[RuleSet, ...], t: datetime
) -> RuleSet | None:
    """The rule set governing an incident that occurred at ``t``: the newest one in force."""
    candidates = [r for r in rule_sets if r.in_force_at(t)]
    return max(candidates, key=lambda r: r.effective_from) if candidates else None
