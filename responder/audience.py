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
