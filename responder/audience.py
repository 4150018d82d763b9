"""Who an alert step speaks to: ``role@selector`` resolved against the config's people.

Selectors: ``lead`` (the incident's lead unit), ``co`` (its co-units), ``involved`` (both),
``#tag`` (every unit carrying the tag, e.g. ``#office``), or a unit id.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from responder.config import Config, Person


def units_for(selector: str, cfg: Config, lead_unit: str, co_units: Iterable[str]) -> list[str]:
    co = list(co_units)
    if selector == "lead":
        return [lead_unit]
    if selector == "co":
        return co
    if selector == "involved":
        return [lead_unit, *co]
    if selector.startswith("#"):
        tag = selector[1:]
        return [u.id for u in cfg.units if tag in u.tags]
    return [selector]


def resolve(
    audience: Iterable[str], cfg: Config, lead_unit: str, co_units: Iterable[str]
) -> list[Person]:
    """The people an audience names, each once, in the order the audience lists them."""
    co = list(co_units)
    seen: dict[str, Person] = {}
    for item in audience:
        role, selector = item.split("@", 1)
        for unit in units_for(selector, cfg, lead_unit, co):
            for person in cfg.people:
                if person.unit == unit and role in person.roles:
                    seen.setdefault(person.id, person)
    return list(seen.values())


def responsible_person(cfg: Config, unit: str) -> Person | None:
    """The unit's principal (主要负责人): its first person with the role ``head``."""
    return next((p for p in cfg.people if p.unit == unit and "head" in p.roles), None)


def channels_for(person: Person, preferred: Iterable[str]) -> list[str]:
    """A person's failover order, with the step's preferred channel kinds first.

    A step may ask for a voice call first (30 min before a deadline); a person who has no
    voice channel still gets the message on the channels they do have.
    """
    pref = [c for c in preferred if c in person.channels]
    return pref + [c for c in person.channels if c not in pref]


_OWN = ("lead", "involved")  # the incident's own units: any unit may lead


def unreached(cfg: Config) -> list[tuple[str, str]]:
    """Audiences of the rule sets that reach nobody with this config, in Chinese and English
    (for ``check-config`` and the start of ``serve``): a role addressed at the lead unit that
    some units have nobody for, or a fixed selector (``#tag``, a unit id) without that role.
    A step whose audience reaches nobody fires and tells no one."""
    own_roles: dict[str, None] = {}
    fixed: dict[str, None] = {}
    for rules in cfg.rule_sets:
        for steps in rules.escalations.values():
            for step in steps:
                for item in step.audience:
                    role, selector = item.split("@", 1)
                    if selector in _OWN:
                        own_roles.setdefault(role)
                    elif selector != "co" and not resolve([item], cfg, "", ()):
                        fixed.setdefault(item)
    notes = []
    gaps = {
        unit.id: missing
        for unit in cfg.units
        if (missing := [r for r in own_roles if not resolve([f"{r}@{unit.id}"], cfg, "", ())])
    }
    if gaps:
        zh = "、".join(f"{u}(无 {'、'.join(m)})" for u, m in gaps.items())
        en = ", ".join(f"{u} (no {', '.join(m)})" for u, m in gaps.items())
        notes.append((
            f"若由以下单位牵头,规则发给该单位这些角色的提醒将无人接收(配置中没有这样的人):{zh}。"
            "如它们可能牵头,请在 [[people]] 中补上",
            f"if one of these units leads an incident, the rules' alerts to these roles in it"
            f" reach nobody (no such person in the config): {en}; if they may lead, add those"
            " people under [[people]]",
        ))  # fmt: skip
    if fixed:
        zh = "、".join(fixed)
        notes.append((
            f"规则中的以下提醒对象在配置中没有任何人:{zh}",
            f"these audiences of the rules reach nobody in the config: {', '.join(fixed)}",
        ))  # fmt: skip
    return notes
