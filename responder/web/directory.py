"""People, units and rules (``/directory``), read-only: so a duty officer can answer "who gets
called at the deadline?" without opening the TOML.

Units with their people (contacts masked as everywhere else), the channels each person has in
failover order, and each rule set with its obligations and alert steps — each step's audience
said in words, with the people it reaches where that does not depend on the incident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from responder.config import Config
from responder.policy.rules import LEVEL_NAMES, RuleSet, StepRule
from responder.timeutil import format_duration, show
from responder.views import audience_words, channel_words, mask, role_words
from responder.web.keys import CFG, CLOCK
from responder.web.layout import page_language, pick, render, signed_in

CLOCK_WORDS = {
    "occurred_at": ("事件发生时起", "from when it occurred"),
    "declared_at": ("申报时起", "from the declaration"),
    "learned_at": ("获知时起", "from when it was learned of"),
    "level_changed_at": ("级别调整时起", "from the level change"),
    "previous_release": ("上一次发布时起", "from the previous release"),
}


def _step(step: StepRule, cfg: Config, lang: str) -> dict[str, Any]:
    if step.anchor == "declared":
        when = pick(lang, "申报时", "on declaring")
    elif step.anchor == "deadline" and step.offset:
        before = format_duration(-step.offset, lang)
        when = pick(lang, f"时限前{before}", f"{before} before the deadline")
    elif step.anchor == "deadline":
        when = pick(lang, "到期时(超时告警)", "at the deadline (breach alert)")
    else:
        when = pick(
            lang,
            f"计时起点后{format_duration(step.offset, lang)}",
            f"{format_duration(step.offset, lang)} after the clock starts",
        )
    extra = []
    if step.repeat:
        every = format_duration(step.repeat, lang)
        extra.append(pick(lang, f"此后每{every}重复,直到完成", f"then every {every} until done"))
    if step.all_channels:
        extra.append(pick(lang, "所有渠道同时发送", "on every channel at once"))
    elif step.channels:
        first = pick(lang, "、", ", ").join(channel_words(c, lang) for c in step.channels)
        extra.append(pick(lang, f"优先:{first}", f"first by {first}"))
    return {
        "when": when,
        "who": [audience_words(a, cfg, lang) for a in step.audience],
        "extra": pick(lang, ";", "; ").join(extra),
    }


def _rule_set(rules: RuleSet, cfg: Config, lang: str, now: datetime) -> dict[str, Any]:
    until = show(rules.effective_until, cfg.tz) if rules.effective_until else ""
    return {
        "id": rules.id,
        "title": pick(lang, rules.title, rules.title_en or rules.title),
        "in_force": rules.in_force_at(now),
        "from": show(rules.effective_from, cfg.tz),
        "until": until,
        "obligations": [
            {
                "name": pick(lang, o.name, o.name_en),
                "levels": pick(lang, "、", ", ").join(
                    pick(lang, f"{lv}级({LEVEL_NAMES[lv]})", f"level {lv}") for lv in o.levels
                ),
                "within": format_duration(o.within, lang),
                "clock": pick(lang, *CLOCK_WORDS[o.clock_start]),
                "steps": [_step(s, cfg, lang) for s in rules.escalations[o.escalation]],
            }
            for o in rules.obligations
        ],
    }


async def directory(request: web.Request) -> web.Response:
    user = await signed_in(request)
    cfg, lang = request.app[CFG], page_language(request)
    now = request.app[CLOCK].now()
    units = [
        {
            "name": pick(lang, u.name, u.name_en or u.name),
            "id": u.id,
            "people": [
                {
                    "name": p.name,
                    "roles": pick(lang, "、", ", ").join(role_words(r, lang) for r in p.roles),
                    "phone": mask(p.phone) or "",
                    "email": mask(p.email) or "",
                    "channels": [channel_words(c, lang) for c in p.channels],
                }
                for p in cfg.people
                if p.unit == u.id
            ],
        }
        for u in cfg.units
    ]
    rule_sets = sorted(
        (_rule_set(r, cfg, lang, now) for r in cfg.rule_sets),
        key=lambda r: (not r["in_force"], r["from"]),
    )
    return render(request, "directory.html", {"units": units, "rule_sets": rule_sets}, user=user)


def setup(app: web.Application) -> None:
    app.router.add_get("/directory", directory)
