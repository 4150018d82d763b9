"""The planner: (incident facts, rule set, now) → obligations with deadlines and alert steps.

Pure: no I/O, and ``now`` is always passed in.  The engine stores what this returns and fires it.

How a declaration is planned:

1. Pick the obligations the rule set gives the incident's level.
2. For each, find its clock start (``occurred_at`` unless the rule says otherwise) and set the
   deadline = clock start + limit.  A deadline not after ``now`` makes the obligation breached
   at once.
3. Lay out its escalation's steps on the clock.  Steps already due at ``now`` (a late
   declaration) collapse into one catch-up step due now, whose audience is the union of theirs:
   each person hears once, not once per missed step.
4. A step at the deadline with ``repeat`` comes back every ``repeat`` until the obligation is
   met.  The plan holds the deadline step with ``repeat_every``; firing it stores the next
   repeat (:func:`next_repeat`), and firing that the one after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from responder.policy.rules import ObligationRule, RuleSet, StepRule

STEP_KINDS = ("notice", "reminder", "deadline", "catch_up", "repeat")


@dataclass(frozen=True)
class Facts:
    """What the planner needs to know about an incident."""

    level: str
    occurred_at: datetime
    declared_at: datetime
    learned_at: datetime | None = None


@dataclass(frozen=True)
class PlannedObligation:
    kind: str
    name: str
    name_en: str
    milestone: str
    level: str
    clock_start_kind: str
    clock_start_at: datetime
    within: timedelta
    deadline: datetime
    status: str  # "open" or "breached" (deadline already past when planned)
    seq: int = 1  # follow-up releases are numbered


@dataclass(frozen=True)
class PlannedStep:
    obligation_kind: str
    obligation_seq: int
    name: str
    kind: str  # one of STEP_KINDS
    nominal_at: datetime  # the point on the clock this step stands for
    due_at: datetime  # when it fires (now, for a collapsed catch-up)
    audience: tuple[str, ...]
    channels: tuple[str, ...] = ()
    is_deadline: bool = False  # firing it breaches the obligation
    repeat_every: timedelta | None = None
    collapsed: tuple[str, ...] = ()  # names of the steps a catch-up stands for
    all_channels: bool = False  # every channel of each person at once (the breach alert)


@dataclass(frozen=True)
class Plan:
    obligations: tuple[PlannedObligation, ...] = ()
    steps: tuple[PlannedStep, ...] = ()
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Waived:
    """An incident's obligation that a lowering waived: raised back, it returns on its clock."""

    clock_start_kind: str
    clock_start_at: datetime
    seq: int


@dataclass(frozen=True)
class LevelChange:
    """What a level change does: obligations to add (with steps), obligation kinds to waive."""

    add: Plan
    waive: tuple[str, ...]
    direction: str  # "raised", "lowered" or "same"


def clock_start(rule: ObligationRule, facts: Facts) -> tuple[str, datetime]:
    """Which clock start applies and its time.  learned_at falls back to declared_at."""
    if rule.clock_start == "declared_at":
        return "declared_at", facts.declared_at
    if rule.clock_start == "learned_at":
        if facts.learned_at is not None:
            return "learned_at", facts.learned_at
        return "declared_at", facts.declared_at
    return "occurred_at", facts.occurred_at


def plan_obligation(
    rule: ObligationRule,
    level: str,
    start_kind: str,
    start_at: datetime,
    now: datetime,
    seq: int = 1,
) -> PlannedObligation:
    deadline = start_at + rule.within
    return PlannedObligation(
        kind=rule.kind,
        name=rule.name,
        name_en=rule.name_en,
        milestone=rule.milestone,
        level=level,
        clock_start_kind=start_kind,
        clock_start_at=start_at,
        within=rule.within,
        deadline=deadline,
        status="breached" if deadline <= now else "open",
        seq=seq,
    )


def _nominal(step: StepRule, ob: PlannedObligation, declared_at: datetime) -> datetime:
    if step.anchor == "declared":
        return declared_at + step.offset
    if step.anchor == "clock_start":
        return ob.clock_start_at + step.offset
    return ob.deadline + step.offset


def _kind(step: StepRule) -> str:
    if step.anchor == "deadline" and step.offset == timedelta(0):
        return "deadline"
    if step.anchor == "declared":
        return "notice"
    return "reminder"


def _union(items: list[tuple[str, ...]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in items:
        for item in group:
            seen.setdefault(item, None)
    return tuple(seen)


def next_repeat(deadline: datetime, every: timedelta, after: datetime) -> datetime:
    """The first repeat strictly after ``after``: deadline + k·every, k ≥ 1."""
    k = max(1, (after - deadline) // every + 1)
    return deadline + k * every


def plan_steps(
    ob: PlannedObligation, steps: tuple[StepRule, ...], announced_at: datetime, now: datetime
) -> tuple[PlannedStep, ...]:
    """Lay an escalation on an obligation's clock, collapsing what is already due at ``now``.

    ``announced_at`` is when the obligation became known to the service (the declaration, a
    level raise, a release that starts a follow-up): steps anchored at "declared" count from it.
    A step that would fall before ``announced_at`` is not lost: it is due, so it collapses.
    """
    raw: list[PlannedStep] = []
    for rule in steps:
        nominal = _nominal(rule, ob, announced_at)
        kind = _kind(rule)
        if kind != "deadline" and nominal > ob.deadline:
            if rule.anchor != "declared":
                continue  # e.g. a step 2 h after the clock start of a 1 h obligation
            # announced after its deadline: the notice stands at the deadline and, being
            # due, collapses into the breach alert below
            nominal = ob.deadline
        raw.append(
            PlannedStep(
                obligation_kind=ob.kind,
                obligation_seq=ob.seq,
                name=rule.name,
                kind=kind,
                nominal_at=nominal,
                due_at=nominal,
                audience=rule.audience,
                channels=rule.channels,
                is_deadline=kind == "deadline",
                repeat_every=rule.repeat,
                all_channels=rule.all_channels,
            )
        )
    raw.sort(key=lambda s: (s.nominal_at, s.name))
    due = [s for s in raw if s.nominal_at <= now]
    later = [s for s in raw if s.nominal_at > now]
    out: list[PlannedStep] = []
    if len(due) == 1:
        s = due[0]
        out.append(_replace_due(s, now))
    elif due:
        deadline_step = next((s for s in due if s.is_deadline), None)
        out.append(
            PlannedStep(
                obligation_kind=ob.kind,
                obligation_seq=ob.seq,
                name="catch_up",
                kind="catch_up",
                nominal_at=max(s.nominal_at for s in due),
                due_at=now,
                audience=_union([s.audience for s in due]),
                channels=_union([s.channels for s in due]),
                is_deadline=deadline_step is not None,
                repeat_every=deadline_step.repeat_every if deadline_step else None,
                collapsed=tuple(s.name for s in due),
                all_channels=any(s.all_channels for s in due),
            )
        )
    out.extend(later)
    # Repeats are not laid out here: firing a step that carries repeat_every stores the next
    # one (see next_repeat), so only one repeat is ever pending and none outlives "met".
    return tuple(out)


def _replace_due(s: PlannedStep, now: datetime) -> PlannedStep:
    return PlannedStep(**{**s.__dict__, "due_at": max(s.due_at, now)})


def plan_declaration(facts: Facts, rules: RuleSet, now: datetime) -> Plan:
    """Everything a declaration at ``now`` sets running."""
    obligations: list[PlannedObligation] = []
    steps: list[PlannedStep] = []
    for rule in rules.for_level(facts.level):
        if rule.clock_start == "previous_release":
            continue  # follow-ups start with the authoritative release, see plan_follow_up
        kind, at = clock_start(rule, facts)
        ob = plan_obligation(rule, facts.level, kind, at, now)
        obligations.append(ob)
        steps.extend(plan_steps(ob, rules.escalations[rule.escalation], facts.declared_at, now))
    return Plan(tuple(obligations), tuple(steps))


def plan_follow_up(
    rules: RuleSet, level: str, released_at: datetime, seq: int, now: datetime
) -> Plan:
    """After a release, the next follow-up release falls due ``within`` after it."""
    out_obs: list[PlannedObligation] = []
    out_steps: list[PlannedStep] = []
    for rule in rules.for_level(level):
        if rule.clock_start != "previous_release":
            continue
        ob = plan_obligation(rule, level, "previous_release", released_at, now, seq=seq)
        out_obs.append(ob)
        out_steps.extend(plan_steps(ob, rules.escalations[rule.escalation], now, now))
    return Plan(tuple(out_obs), tuple(out_steps))


def plan_level_change(
    facts: Facts,
    new_level: str,
    rules: RuleSet,
    existing: dict[str, str],
    changed_at: datetime,
    now: datetime,
    waived: Mapping[str, Waived] | None = None,
) -> LevelChange:
    """A level change at ``changed_at``.

    ``existing`` maps obligation kind → status of the incident's latest obligation of that kind;
    ``waived`` holds the clock of each kind whose latest obligation a lowering waived.

    1. Lowering waives the open obligations the new level does not have.
    2. Raising adds the obligations the new level has and the incident has no live one of.
       An obligation new to the incident counts from the raise (``on_raise =
       "level_changed_at"``: the duty could not be known before) or from its clock start.
    3. An obligation a lowering waived comes back as a new one (the waived one stays on record)
       with the deadline it had: the duty was known, and lowering and raising again must not
       move a deadline later.  Already past, it is breached at once.
    """
    from responder.policy.rules import LEVEL_RANK

    old_rank, new_rank = LEVEL_RANK[facts.level], LEVEL_RANK[new_level]
    direction = "raised" if new_rank > old_rank else "lowered" if new_rank < old_rank else "same"
    wanted = {r.kind: r for r in rules.for_level(new_level) if r.clock_start != "previous_release"}
    waive = tuple(
        kind
        for kind, status in existing.items()
        if status == "open"
        and rules.obligation(kind) is not None
        and new_level not in rules.obligation(kind).levels  # type: ignore[union-attr]
    )
    obligations: list[PlannedObligation] = []
    steps: list[PlannedStep] = []
    for kind, rule in wanted.items():
        if existing.get(kind) in ("open", "met", "breached"):
            continue
        earlier = (waived or {}).get(kind) if existing.get(kind) == "waived" else None
        seq = 1
        if earlier is not None:
            start_kind, start_at, seq = (
                earlier.clock_start_kind,
                earlier.clock_start_at,
                earlier.seq + 1,
            )
        elif rule.on_raise == "level_changed_at":
            start_kind, start_at = "level_changed_at", changed_at
        else:
            start_kind, start_at = clock_start(rule, facts)
        ob = plan_obligation(rule, new_level, start_kind, start_at, now, seq=seq)
        obligations.append(ob)
        steps.extend(plan_steps(ob, rules.escalations[rule.escalation], changed_at, now))
    return LevelChange(Plan(tuple(obligations), tuple(steps)), waive, direction)


def plan_close(open_deadlines: dict[int, datetime], now: datetime) -> tuple[list[int], list[int]]:
    """Closing an incident: (obligations to breach, obligations to waive).

    An open obligation whose deadline has passed was missed, closed or not: it is breached
    (and goes to the reviewers).  One still running is waived — the incident is over.
    """
    breach = sorted(i for i, deadline in open_deadlines.items() if deadline <= now)
    waive = sorted(i for i, deadline in open_deadlines.items() if deadline > now)
    return breach, waive
