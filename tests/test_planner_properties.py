"""Properties of the deadline core over random incident histories.

The pure planner is checked against both shipped rule sets, a hand-written synthetic rule set
with odd durations, and randomly generated rule sets.  At the ops level (real SQLite file), a
random sequence of level changes, releases and clock moves must never lose the audit trail.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from responder import config
from responder.clock import FakeClock
from responder.errors import BadInput, Conflict
from responder.models import ChangeLevel, CloseIncident, DeclareIncident, RecordRelease
from responder.ops import Ops
from responder.policy.planner import (
    Facts,
    Plan,
    PlannedObligation,
    Waived,
    clock_start,
    next_repeat,
    plan_close,
    plan_declaration,
    plan_follow_up,
    plan_level_change,
)
from responder.policy.rules import LEVELS, ObligationRule, RuleSet, StepRule, rule_set_in_force
from responder.store import Database
from responder.store.audit import verify
from responder.timeutil import from_db, to_db

ROOT = Path(__file__).resolve().parent.parent
GBF = config.load_rule_set(ROOT / "config" / "rules" / "gbf-2016-80.toml")
JS = config.load_rule_set(ROOT / "config" / "rules" / "js-2016-local.toml")
CST = timezone(timedelta(hours=8))
NOW0 = datetime(2026, 11, 26, 9, 0, tzinfo=CST).astimezone(UTC)

SYNTHETIC = RuleSet.model_validate(
    {
        "id": "synthetic-odd",
        "title": "odd durations",
        "effective_from": "2020-01-01T00:00:00+08:00",
        "obligations": [
            {
                "kind": "authoritative_release",
                "name": "发布",
                "name_en": "release",
                "levels": ["I", "II"],
                "within": "1h7m13s",
                "clock_start": "learned_at",
                "on_raise": "clock_start",
                "milestone": "authoritative_release",
                "escalation": "odd",
            },
            {
                "kind": "press_conference",
                "name": "发布会",
                "name_en": "press conference",
                "levels": ["I", "II"],
                "within": "23h59m59s",
                "clock_start": "declared_at",
                "milestone": "press_conference",
                "escalation": "odd",
            },
            {
                "kind": "leader_briefing",
                "name": "领导通报",
                "name_en": "leader briefing",
                "levels": ["I"],
                "within": "47m",
                "milestone": "press_conference",
                "escalation": "short",
            },
            {
                "kind": "follow_up_release",
                "name": "持续发布",
                "name_en": "follow-up",
                "levels": ["I", "II"],
                "within": "7h11m",
                "clock_start": "previous_release",
                "milestone": "follow_up_release",
                "escalation": "short",
            },
        ],
        "escalations": {
            "odd": [
                {"name": "declared", "anchor": "declared", "audience": ["head@lead"]},
                {
                    "name": "declared+90m",  # after the 1h7m13s deadline: stands at it
                    "anchor": "declared",
                    "offset": "1h30m",
                    "audience": ["leader@#office"],
                },
                {
                    "name": "start+2h",  # after the 1h7m13s deadline: dropped there
                    "anchor": "clock_start",
                    "offset": "2h",
                    "audience": ["head@#publicity"],
                },
                {
                    "name": "T-3h",  # before the clock start of the 1h7m13s obligation
                    "anchor": "deadline",
                    "offset": "-3h",
                    "audience": ["spokesperson@lead", "head@lead"],
                    "channels": ["sms"],
                },
                {
                    "name": "T-7m",
                    "anchor": "deadline",
                    "offset": "-7m",
                    "audience": ["duty_officer@#office"],
                    "channels": ["voice", "sms"],
                },
                {
                    "name": "deadline",
                    "anchor": "deadline",
                    "repeat": "17m13s",
                    "audience": ["head@lead", "leader@gov-office"],
                    "channels": ["voice"],
                },
            ],
            "short": [
                {"name": "T-11m", "anchor": "deadline", "offset": "-11m", "audience": ["head@co"]},
                {
                    "name": "deadline",
                    "anchor": "deadline",
                    "repeat": "59m",
                    "audience": ["head@involved"],
                },
            ],
        },
    }
)
FIXED_RULE_SETS = [GBF, JS, SYNTHETIC]

# Durations people tend to get wrong: exactly at, just before and just after the limits.
EDGES = [
    0,
    1,
    10,
    30 * 60,
    3600,
    2 * 3600,
    3 * 3600,
    4 * 3600 + 59 * 60 + 50,
    4 * 3600 + 30 * 60,
    5 * 3600 - 1,
    5 * 3600,
    5 * 3600 + 1,
    6 * 3600,
    67 * 60 + 13,
    23 * 3600,
    24 * 3600 - 1,
    24 * 3600,
    24 * 3600 + 1,
    24 * 3600 + 30 * 60,
]


def seconds(max_s: int) -> st.SearchStrategy[timedelta]:
    edge = st.sampled_from([e for e in EDGES if e <= max_s])
    jitter = st.integers(-2, 2)
    return st.one_of(
        st.integers(0, max_s),
        edge,
        st.tuples(edge, jitter).map(lambda t: max(0, min(max_s, t[0] + t[1]))),
    ).map(lambda s: timedelta(seconds=s))


AUDIENCES = [
    "head@lead",
    "spokesperson@lead",
    "duty_officer@#office",
    "leader@#office",
    "head@#publicity",
    "head@co",
    "spokesperson@involved",
    "leader@gov-office",
]


@st.composite
def random_rule_sets(draw: st.DrawFn) -> RuleSet:
    """A valid rule set with random limits, anchors, offsets and repeats."""
    escalations: dict[str, list[dict[str, Any]]] = {}
    for e in range(draw(st.integers(1, 3))):
        names = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=4))
        steps: list[dict[str, Any]] = []
        for name in names:
            anchor = draw(st.sampled_from(["declared", "clock_start", "deadline"]))
            if anchor == "deadline":
                offset = -draw(st.integers(1, 30 * 3600))
            else:
                offset = draw(st.integers(-3 * 3600, 30 * 3600))
            steps.append(
                {
                    "name": name,
                    "anchor": anchor,
                    "offset": f"{offset}s",
                    "audience": draw(
                        st.lists(st.sampled_from(AUDIENCES), min_size=1, max_size=3, unique=True)
                    ),
                    "channels": draw(
                        st.lists(st.sampled_from(["sms", "voice", "email"]), unique=True)
                    ),
                }
            )
        deadline_step: dict[str, Any] = {
            "name": "deadline",
            "anchor": "deadline",
            "audience": draw(
                st.lists(st.sampled_from(AUDIENCES), min_size=1, max_size=3, unique=True)
            ),
        }
        if draw(st.booleans()):
            deadline_step["repeat"] = f"{draw(st.integers(60, 4 * 3600))}s"  # 1 min at least
        steps.insert(draw(st.integers(0, len(steps))), deadline_step)
        escalations[f"e{e}"] = steps
    esc_names = sorted(escalations)
    obligations = []
    kinds = draw(
        st.lists(
            st.sampled_from(["authoritative_release", "press_conference", "briefing", "notice"]),
            unique=True,
            min_size=1,
            max_size=3,
        )
    )
    for kind in kinds:
        obligations.append(
            {
                "kind": kind,
                "name": kind,
                "name_en": kind,
                "levels": draw(st.lists(st.sampled_from(LEVELS), unique=True, min_size=1)),
                "within": f"{draw(st.integers(1, 3 * 86400))}s",
                "clock_start": draw(st.sampled_from(["occurred_at", "declared_at", "learned_at"])),
                "on_raise": draw(st.sampled_from(["level_changed_at", "clock_start"])),
                "milestone": "press_conference"
                if kind == "press_conference"
                else "authoritative_release",
                "escalation": draw(st.sampled_from(esc_names)),
            }
        )
    if draw(st.booleans()):
        obligations.append(
            {
                "kind": "follow_up_release",
                "name": "follow-up",
                "name_en": "follow-up",
                "levels": draw(st.lists(st.sampled_from(LEVELS), unique=True, min_size=1)),
                "within": f"{draw(st.integers(1, 2 * 86400))}s",
                "clock_start": "previous_release",
                "milestone": "follow_up_release",
                "escalation": draw(st.sampled_from(esc_names)),
            }
        )
    return RuleSet.model_validate(
        {
            "id": "random",
            "title": "random",
            "effective_from": "2000-01-01T00:00:00+08:00",
            "obligations": obligations,
            "escalations": escalations,
        }
    )


any_rule_set = st.one_of(st.sampled_from(FIXED_RULE_SETS), random_rule_sets())


@dataclass(frozen=True)
class History:
    facts: Facts
    now: datetime  # when it is declared (the planning "now")
    changes: tuple[tuple[str, timedelta, bool], ...]  # (new level, clock moves by, meet one first)


@st.composite
def histories(draw: st.DrawFn) -> History:
    age = draw(seconds(3 * 86400))
    micro = timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000, 999_999])))
    now = NOW0 + micro
    occurred = now - age
    span = int(age.total_seconds())
    declared = occurred + timedelta(seconds=draw(st.integers(0, span)))
    learned = (
        occurred + timedelta(seconds=draw(st.integers(0, span))) if draw(st.booleans()) else None
    )
    changes = draw(
        st.lists(st.tuples(st.sampled_from(LEVELS), seconds(30 * 3600), st.booleans()), max_size=6)
    )
    return History(
        Facts(draw(st.sampled_from(LEVELS)), occurred, declared, learned), now, tuple(changes)
    )


# -- the oracle ------------------------------------------------------------------------


def _expected_steps(
    ob: PlannedObligation, steps: tuple[StepRule, ...], announced: datetime
) -> list[tuple[StepRule, datetime]]:
    """Each rule step with the time it stands for, as the module docstring of the planner says."""
    out = []
    for r in steps:
        base = {"declared": announced, "clock_start": ob.clock_start_at, "deadline": ob.deadline}
        nominal = base[r.anchor] + r.offset
        at_deadline = r.anchor == "deadline" and r.offset == timedelta(0)
        if not at_deadline and nominal > ob.deadline:
            if r.anchor != "declared":
                continue
            nominal = ob.deadline
        out.append((r, nominal))
    return out


def check_plan(
    plan: Plan,
    rules: RuleSet,
    now: datetime,
    announced: datetime,
    expected_start: Callable[[ObligationRule], tuple[str, datetime]],
) -> None:
    keys = [(o.kind, o.seq) for o in plan.obligations]
    assert len(keys) == len(set(keys)), keys
    step_keys = [(s.obligation_kind, s.obligation_seq, s.name, s.due_at) for s in plan.steps]
    assert len(step_keys) == len(set(step_keys)), "a step is planned twice"
    assert {(s.obligation_kind, s.obligation_seq) for s in plan.steps} <= set(keys)

    for ob in plan.obligations:
        rule = rules.obligation(ob.kind)
        assert rule is not None
        assert ob.within == rule.within
        assert ob.deadline == ob.clock_start_at + rule.within
        assert (ob.clock_start_kind, ob.clock_start_at) == expected_start(rule)
        assert ob.milestone == rule.milestone
        steps = [
            s for s in plan.steps if (s.obligation_kind, s.obligation_seq) == (ob.kind, ob.seq)
        ]

        for s in steps:
            assert s.due_at >= now, f"{s.name} due before it was planned"
            if s.kind == "repeat":
                assert s.nominal_at > ob.deadline
                assert s.due_at == s.nominal_at > now
            elif s.is_deadline:
                assert s.nominal_at == ob.deadline
            else:
                assert s.nominal_at <= ob.deadline, f"{s.name} after the deadline"

        expected = _expected_steps(ob, rules.escalations[rule.escalation], announced)
        due = [(r, t) for r, t in expected if t <= now]
        later = [(r, t) for r, t in expected if t > now]

        at_now = [s for s in steps if s.due_at == now]
        assert len(at_now) == (1 if due else 0), "past steps must collapse into one"
        if due:
            c = at_now[0]
            union = {a for r, _ in due for a in r.audience}
            assert set(c.audience) == union
            assert len(c.audience) == len(set(c.audience))
            assert c.is_deadline == (ob.deadline <= now)
            assert c.nominal_at <= now
            if len(due) > 1:
                assert c.kind == "catch_up"
                assert sorted(c.collapsed) == sorted(r.name for r, _ in due)
            else:
                assert c.name == due[0][0].name

        future = sorted((s.name, s.due_at) for s in steps if s.due_at > now and s.kind != "repeat")
        assert future == sorted((r.name, t) for r, t in later)

        deadline_rule = next(
            r for r in rules.escalations[rule.escalation] if r.anchor == "deadline" and not r.offset
        )
        carrier = [s for s in steps if s.is_deadline]
        assert len(carrier) == 1, "exactly one step carries the breach"
        # the breach alert carries the repeat; firing it stores the next one (next_repeat)
        assert carrier[0].repeat_every == deadline_rule.repeat
        assert carrier[0].all_channels == any(r.all_channels for r, t in expected if t <= now) or (
            carrier[0].due_at > now and carrier[0].all_channels == deadline_rule.all_channels
        )
        repeats = [s for s in steps if s.kind == "repeat"]
        if ob.deadline <= now:
            assert ob.status == "breached"
            assert carrier[0].due_at == now
        else:
            assert ob.status == "open"
            assert carrier[0].due_at == ob.deadline
            assert repeats == []
        if repeats:  # a planner may also lay out the next repeat: then only that one
            assert deadline_rule.repeat is not None
            assert [s.due_at for s in repeats] == [
                next_repeat(ob.deadline, deadline_rule.repeat, now)
            ]


# -- properties of the pure planner ----------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=any_rule_set, h=histories())
def test_declaration_and_level_changes(rules: RuleSet, h: History) -> None:
    facts, now = h.facts, h.now
    plan = plan_declaration(facts, rules, now)
    assert {o.kind for o in plan.obligations} == {
        r.kind for r in rules.for_level(facts.level) if r.clock_start != "previous_release"
    }
    check_plan(plan, rules, now, facts.declared_at, lambda r: clock_start(r, facts))
    if rules in FIXED_RULE_SETS and facts.level in ("III", "IV"):
        assert plan == Plan()

    # the latest obligation per kind as the store would keep it: [status, deadline, its clock]
    state = {o.kind: [o.status, o.deadline, o] for o in plan.obligations}
    level = facts.level
    for new_level, moved, meet_one in h.changes:
        now += moved
        for s in state.values():  # the scheduler fired every deadline step that came due
            if s[0] == "open" and s[1] <= now:
                s[0] = "breached"
        if meet_one:
            first_open = next((s for s in state.values() if s[0] == "open"), None)
            if first_open:
                first_open[0] = "met"
        f = Facts(level, facts.occurred_at, facts.declared_at, facts.learned_at)
        waived = {
            k: Waived(s[2].clock_start_kind, s[2].clock_start_at, s[2].seq)
            for k, s in state.items()
            if s[0] == "waived"
        }
        change = plan_level_change(
            f, new_level, rules, {k: s[0] for k, s in state.items()}, now, now, waived
        )

        order = LEVELS.index(new_level) - LEVELS.index(level)  # LEVELS runs I (highest) → IV
        assert change.direction == ("raised" if order < 0 else "lowered" if order > 0 else "same")
        should_waive = {
            k
            for k, s in state.items()
            if s[0] == "open" and new_level not in rules.obligation(k).levels
        }
        assert set(change.waive) == should_waive
        wanted = {r.kind for r in rules.for_level(new_level) if r.clock_start != "previous_release"}
        live = {k for k, s in state.items() if s[0] in ("open", "met", "breached")}
        assert {o.kind for o in change.add.obligations} == wanted - live
        if rules in FIXED_RULE_SETS and new_level in ("III", "IV"):
            assert change.add == Plan()

        def start(
            r: ObligationRule, f: Facts = f, at: datetime = now, w: dict[str, Waived] = waived
        ) -> tuple[str, datetime]:
            if r.kind in w:  # back on the clock it had: lowering and raising moves nothing
                return w[r.kind].clock_start_kind, w[r.kind].clock_start_at
            return (
                ("level_changed_at", at) if r.on_raise == "level_changed_at" else clock_start(r, f)
            )

        check_plan(change.add, rules, now, now, start)
        for o in change.add.obligations:
            assert o.seq == (waived[o.kind].seq + 1 if o.kind in waived else 1)
            if o.kind in waived:
                assert o.deadline == state[o.kind][1]  # the deadline it had before the lowering
        for k in change.waive:
            state[k][0] = "waived"
        for o in change.add.obligations:
            state[o.kind] = [o.status, o.deadline, o]
        level = new_level


@settings(max_examples=200, deadline=None)
@given(
    rules=any_rule_set,
    level=st.sampled_from(LEVELS),
    since_release=seconds(3 * 86400),
    seq=st.integers(1, 50),
)
def test_follow_up(rules: RuleSet, level: str, since_release: timedelta, seq: int) -> None:
    now = NOW0
    released = now - since_release
    plan = plan_follow_up(rules, level, released, seq, now)
    follow = [r for r in rules.for_level(level) if r.clock_start == "previous_release"]
    assert [(o.kind, o.seq) for o in plan.obligations] == [(r.kind, seq) for r in follow]
    check_plan(plan, rules, now, now, lambda r: ("previous_release", released))


@settings(max_examples=400, deadline=None)
@given(
    deadline=st.datetimes(
        min_value=datetime(2016, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    every=st.integers(1, 86400).map(lambda s: timedelta(seconds=s)),
    after=st.integers(-3 * 86400, 10 * 86400).map(lambda s: timedelta(seconds=s)),
    micro=st.integers(-999_999, 999_999).map(lambda u: timedelta(microseconds=u)),
)
@example(
    deadline=datetime(2026, 11, 26, 5, tzinfo=UTC),
    every=timedelta(minutes=30),
    after=timedelta(minutes=30),
    micro=timedelta(0),
)
def test_next_repeat(
    deadline: datetime, every: timedelta, after: timedelta, micro: timedelta
) -> None:
    t = deadline + after + micro
    got = next_repeat(deadline, every, t)
    k, rest = divmod(got - deadline, every)
    assert rest == timedelta(0) and k >= 1
    assert got > t
    assert k == 1 or deadline + (k - 1) * every <= t  # the first one strictly after


ZONES = st.sampled_from(
    [
        UTC,
        CST,
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=14)),
        ZoneInfo("Asia/Shanghai"),
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    t=st.datetimes(min_value=datetime(2010, 1, 1), max_value=datetime(2035, 1, 1), timezones=ZONES)
)
@example(t=datetime(2016, 6, 1, tzinfo=CST))
@example(t=datetime(2016, 11, 10, tzinfo=CST))
@example(t=datetime(2016, 11, 9, 23, 59, 59, 999_999, tzinfo=CST))
@example(t=datetime(2016, 11, 9, 16, tzinfo=UTC))
@example(t=datetime(2016, 1, 1, tzinfo=CST))
@example(t=datetime(2015, 12, 31, 23, 59, 59, 999_999, tzinfo=CST))
def test_rule_set_in_force(t: datetime) -> None:
    got = rule_set_in_force([GBF, JS], t)
    if t < datetime(2016, 1, 1, tzinfo=CST):
        assert got is None
    elif t < datetime(2016, 11, 10, tzinfo=CST):
        assert got is JS
        assert got.obligation("authoritative_release").within == timedelta(hours=6)
    else:
        assert got is GBF
        assert got.obligation("authoritative_release").within == timedelta(hours=5)
    assert rule_set_in_force([JS, GBF], t) is got  # file order does not matter


def test_rule_set_in_force_named_cases() -> None:
    assert rule_set_in_force([GBF, JS], datetime(2016, 6, 1, tzinfo=CST)) is JS
    assert rule_set_in_force([GBF, JS], datetime(2016, 11, 10, tzinfo=CST)) is GBF
    assert rule_set_in_force([GBF, JS], datetime(2026, 11, 26, tzinfo=CST)) is GBF
    assert rule_set_in_force([GBF, JS], datetime(2015, 12, 31, 23, 59, tzinfo=CST)) is None
    for rules in (GBF, JS, SYNTHETIC):
        for level in ("III", "IV"):
            now = NOW0
            facts = Facts(level, now - timedelta(hours=3), now - timedelta(hours=1))
            assert plan_declaration(facts, rules, now) == Plan()


@pytest.mark.parametrize("count", [0, 2])
def test_an_escalation_needs_exactly_one_step_at_the_deadline(count: int) -> None:
    """Without one, nothing would ever breach the obligation; with two, repeats double."""
    steps = [
        {"name": f"d{i}", "anchor": "deadline", "repeat": "30m", "audience": ["head@lead"]}
        for i in range(count)
    ]
    steps.append({"name": "T-1h", "anchor": "deadline", "offset": "-1h", "audience": ["head@lead"]})
    with pytest.raises(ValueError, match="deadline"):
        RuleSet.model_validate(
            {
                "id": "x",
                "title": "x",
                "effective_from": "2020-01-01T00:00:00+08:00",
                "obligations": [
                    {
                        "kind": "authoritative_release",
                        "name": "x",
                        "name_en": "x",
                        "levels": ["I"],
                        "within": "5h",
                        "milestone": "authoritative_release",
                    }
                ],
                "escalations": {"default": steps},
            }
        )


# -- ops: a random history never loses the audit trail --------------------------------


@functools.cache
def shipped_config() -> config.Config:
    """The example config, loaded once (hypothesis and function-scoped fixtures do not mix)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RESPONDER_DB", "RESPONDER_PUBLIC_URL", "RESPONDER_DEV_INBOX"):
            mp.delenv(name, raising=False)
        return config.load(ROOT / "config" / "responder.toml")


reasons = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "Zs")), min_size=1, max_size=12
).filter(lambda s: s.strip() != "")

actions = st.one_of(
    st.tuples(st.just("level"), st.sampled_from(LEVELS), reasons),
    st.tuples(st.just("advance"), seconds(30 * 3600)),
    st.tuples(st.just("release"), seconds(10 * 3600)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    level=st.sampled_from(LEVELS),
    age=seconds(30 * 3600),
    steps=st.lists(actions, min_size=1, max_size=10),
    close=st.booleans(),
)
# Found by CI: a release at the time of one already recorded (times clamp to occurred_at),
# after a raise opened a new release duty, is refused as a repeat.
@example(
    level="III",
    age=timedelta(hours=1),
    steps=[
        ("release", timedelta(hours=10)),
        ("level", "II", "上调"),
        ("release", timedelta(hours=10)),
    ],
    close=False,
)
def test_ops_history_keeps_the_audit_trail(
    level: str,
    age: timedelta,
    steps: list[tuple[Any, ...]],
    close: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(
            _ops_history(shipped_config(), Path(tmp) / "r.sqlite3", level, age, steps, close)
        )


async def _ops_history(
    cfg: config.Config,
    path: Path,
    level: str,
    age: timedelta,
    steps: list[tuple[Any, ...]],
    close: bool,
) -> None:
    clock = FakeClock(NOW0)
    async with Database(str(path)) as db:
        ops = Ops(db, cfg, clock)
        occurred = clock.now() - age
        iid = await ops.declare(
            DeclareIncident(
                title="测试事件",
                category="accident",
                level=level,
                occurred_at=occurred,
                lead_unit="emergency",
                co_units=["health"],
            ),
            "duty",
        )
        entries = 1
        changes: list[tuple[str, str, str]] = []
        ids_seen: set[int] = set()
        released = False
        published_times: set[datetime] = set()
        closed = False
        current = level

        async def check() -> None:
            nonlocal ids_seen
            verdict = await verify(db.reader)
            assert verdict.ok, verdict.problem
            assert verdict.entries == entries
            rows = await db.fetchall("SELECT * FROM obligations WHERE incident_id = ?", (iid,))
            ids = {r["id"] for r in rows}
            assert ids_seen <= ids, "an obligation row disappeared"
            ids_seen = ids
            for r in rows:
                if r["status"] == "waived":
                    assert r["waived_reason"] and r["waived_at"]
                    # a waiver never erases a breach: only what was not yet due is waived
                    assert from_db(r["waived_at"]) < from_db(r["deadline"])
                if r["status"] in ("met", "waived"):
                    pending = await db.fetchall(
                        "SELECT 1 FROM steps WHERE obligation_id = ? AND status = 'pending'",
                        (r["id"],),
                    )
                    assert pending == [], f"{r['kind']} is {r['status']} but has pending steps"
                records = await db.fetchall(
                    "SELECT 1 FROM accountability_records WHERE obligation_id = ?", (r["id"],)
                )
                assert len(records) == (1 if r["breached_at"] else 0)
            latest: dict[str, Any] = {}
            for r in sorted(rows, key=lambda r: (r["kind"], r["seq"], r["id"])):
                latest[r["kind"]] = r
            if closed:
                assert all(r["status"] != "open" for r in rows)
            elif current in ("I", "II"):
                for kind in ("authoritative_release", "press_conference"):
                    assert latest[kind]["status"] in ("open", "met", "breached")
            else:
                assert all(r["status"] != "open" for r in rows)
            logged = await db.fetchall(
                "SELECT from_level, to_level, reason FROM level_changes WHERE incident_id = ?"
                " ORDER BY id",
                (iid,),
            )
            assert [tuple(r) for r in logged] == changes
            audited = await db.fetchall(
                "SELECT json_extract(data, '$.from'), json_extract(data, '$.to'),"
                " json_extract(data, '$.reason') FROM audit_log"
                " WHERE action = 'incident.level_changed' AND subject = ? ORDER BY seq",
                (iid,),
            )
            assert [tuple(r) for r in audited] == changes

        await check()
        for step in steps:
            if step[0] == "advance":
                clock.advance(step[1])
                continue
            if step[0] == "level":
                data = ChangeLevel(level=step[1], reason=step[2])
                if data.level == current:
                    with pytest.raises(BadInput) as e:
                        await ops.change_level(iid, data, "duty")
                    assert e.value.code == "same_level"
                else:
                    result = await ops.change_level(iid, data, "duty")
                    entries += 1
                    changes.append((current, data.level, data.reason))
                    current = data.level
                    for kind in result["waived"]:
                        row = await db.fetchone(
                            "SELECT waived_reason FROM obligations WHERE incident_id = ?"
                            " AND kind = ? AND status = 'waived' ORDER BY id DESC",
                            (iid, kind),
                        )
                        assert row is not None and data.reason in row[0]
            else:
                published = max(occurred, clock.now() - step[1])
                data_r = RecordRelease(published_at=published)
                unmet = await db.fetchall(
                    "SELECT id FROM obligations WHERE incident_id = ? AND kind = ?"
                    " AND status IN ('open', 'breached') AND met_at IS NULL",
                    (iid, "authoritative_release"),
                )
                assert len(unmet) <= 1
                if released and not unmet:
                    with pytest.raises(Conflict) as c:
                        await ops.record_release(iid, data_r, "duty")
                    assert c.value.code == "already_released"
                elif published in published_times:
                    # the same publication time again is a repeat, not a new release
                    with pytest.raises(Conflict) as c:
                        await ops.record_release(iid, data_r, "duty")
                    assert c.value.code == "release_already_recorded"
                else:
                    # an obligation that is open can always be met by recording its milestone
                    await ops.record_release(iid, data_r, "duty")
                    entries += 1
                    released = True
                    published_times.add(published)
                    for row in unmet:
                        met = await db.fetchone(
                            "SELECT met_at FROM obligations WHERE id = ?", (row["id"],)
                        )
                        assert met is not None and met["met_at"] == to_db(published)
            await check()
        if close:
            await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
            entries += 1
            closed = True
            await check()
            pending = await db.fetchall(
                "SELECT 1 FROM steps WHERE incident_id = ? AND status = 'pending'", (iid,)
            )
            assert pending == []
            assert all(
                r["status"] != "open"
                for r in await db.fetchall(
                    "SELECT status FROM obligations WHERE incident_id = ?", (iid,)
                )
            )
            with pytest.raises(Conflict):
                await ops.change_level(iid, ChangeLevel(level="I", reason="x"), "duty")
            assert (await verify(db._reader)).entries == entries  # type: ignore[arg-type]


@given(
    deadlines=st.dictionaries(
        st.integers(1, 10_000),
        st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
        max_size=20,
    ),
    now=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
def test_closing_breaches_what_is_overdue_and_waives_the_rest(
    deadlines: dict[int, datetime], now: datetime
) -> None:
    to_breach, to_waive = plan_close(deadlines, now)
    assert set(to_breach) | set(to_waive) == set(deadlines)
    assert not set(to_breach) & set(to_waive)
    assert all(deadlines[i] <= now for i in to_breach)
    assert all(deadlines[i] > now for i in to_waive)
