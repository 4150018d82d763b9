"""What is checked before the service starts: valid, but would it work?

``responder check-config`` prints these and ``serve`` logs them at start (refusing to start only
without its templates).  Each check answers in Chinese and English, and never prints a URL
(it may hold a password):

* :func:`check_templates` — the templates are where the service will look for them;
* :func:`channels_not_understood` — apprise understands each person's filled-in channel address;
* :func:`production_notes` — settings that work but are not meant for production: a public URL
  on this machine, the development inbox, no administrators, rule sets that leave a serious
  emergency without deadlines (:func:`rule_gaps`), audiences that reach nobody
  (:func:`unreached`).
"""

from __future__ import annotations

import ipaddress
import itertools
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import apprise

from responder.audience import resolve
from responder.config import Config
from responder.engine.apprise_call import ASSET
from responder.engine.compose import channel_url
from responder.errors import ResponderError
from responder.paths import templates_dir
from responder.policy.rules import RuleSet, rule_set_in_force

# What the service renders: if these are missing, so are the rest (a wrong working directory).
REQUIRED = ("pages/base.html", "pages/error.html", "messages/sms.zh.j2", "messages/email.zh.j2")


def check_templates() -> Path:
    """The templates directory, or a refusal to start that says where it looked and what to do:
    without it every page answers 500 and no message can be built."""
    where = templates_dir()
    missing = [name for name in REQUIRED if not (where / name).is_file()]
    if missing:
        raise ResponderError(
            "templates_missing",
            f"找不到模板:{where} 中缺少 {'、'.join(missing)}。请在含 templates/ 的目录中启动"
            "(Docker 镜像中为 /app),或用环境变量 RESPONDER_TEMPLATES 指明模板目录",
            f"templates not found: {where} lacks {', '.join(missing)}; start from the directory"
            " that holds templates/ (/app in the Docker image), or set RESPONDER_TEMPLATES",
        )
    return where


def understood(url: str) -> bool:
    """Whether apprise knows what to do with ``url`` (nothing is sent)."""
    try:
        return bool(apprise.Apprise(asset=ASSET).add(url))
    except Exception:  # a plugin that chokes on the URL: not understood either
        return False


def channels_not_understood(cfg: Config) -> dict[str, list[str]]:
    """Channel → the people whose filled-in URL apprise does not understand (a typo in the
    scheme, a contact that makes the URL invalid).  Checked before the first alert needs it."""
    out: dict[str, list[str]] = {}
    for person in cfg.people:
        for channel in person.channels:
            template = cfg.channels.get(channel)
            if template is not None and not understood(channel_url(template, person)):
                out.setdefault(channel, []).append(person.id)
    return out


def describe_not_understood(bad: dict[str, list[str]]) -> tuple[str, str]:
    """One sentence per language naming each channel and its people (never a URL: it may hold
    a password)."""
    zh = ";".join(f"渠道 {c}(用于 {'、'.join(people)})" for c, people in bad.items())
    en = "; ".join(f"channel {c} (for {', '.join(people)})" for c, people in bad.items())
    return (
        f"apprise 无法识别以下渠道的地址,请检查 [channels] 中的写法与联系人信息:{zh}",
        f"apprise does not understand the address of: {en}; check the [channels] entries and"
        " the contacts",
    )


def _inbox_elsewhere(cfg: Config) -> list[tuple[str, str]]:
    """Channels that post to a development inbox on another port than this service's: served
    on another port, the example's messages would go nowhere, every one of them failing."""
    ports = set()
    for url in cfg.channels.values():
        parts = urlsplit(url)
        if "/dev/inbox/" in parts.path:
            try:
                ports.add(parts.port or 80)
            except ValueError:  # a template field where the port goes: not ours to judge
                continue
    ports.discard(cfg.service.port)
    if not ports:
        return []
    where = "、".join(str(p) for p in sorted(ports))
    return [(
        f"渠道发往端口 {where} 上的开发收件箱,但本服务使用端口 {cfg.service.port}:消息将发送失败。"
        f"请设置 RESPONDER_DEV_INBOX=127.0.0.1:{cfg.service.port}",
        f"channels post to a development inbox on port {where.replace('、', ', ')}, but this"
        f" service uses port {cfg.service.port}: the messages will fail; set"
        f" RESPONDER_DEV_INBOX=127.0.0.1:{cfg.service.port}",
    )]  # fmt: skip


def production_notes(cfg: Config) -> list[tuple[str, str]]:
    """Settings that work but are almost certainly not meant for production, in Chinese and
    English: ``serve`` logs them at start, ``check-config`` prints them."""
    out = []
    host = (urlsplit(cfg.service.public_url).hostname or "").lower()
    if not cfg.service.dev_inbox and (host == "localhost" or _loopback(host)):
        out.append((
            f"service.public_url 是本机地址({cfg.service.public_url}):消息里的确认链接在"
            "收件人的手机和电脑上打不开,请设为对外的网址",
            f"service.public_url is this machine ({cfg.service.public_url}): the"
            " acknowledgement links in messages will not open on the recipients' phones; set"
            " the address people reach the service at",
        ))  # fmt: skip
    if cfg.service.dev_inbox:
        out.append((
            "开发收件箱已开启(service.dev_inbox):指向它的渠道不会通知到任何人,生产环境请关闭",
            "the development inbox is on (service.dev_inbox): channels pointing at it reach"
            " nobody; turn it off in production",
        ))  # fmt: skip
        out += _inbox_elsewhere(cfg)
    if not cfg.alerts.admins:
        out.append((
            "alerts.admins 为空:消息在所有渠道都发送失败、提醒落后或 API 令牌即将到期时,不会通知任何人",
            "alerts.admins is empty: nobody is told when a message fails on every channel, when"
            " alerts fall behind, or when an API token is about to end",
        ))  # fmt: skip
    out += rule_gaps(cfg.rule_sets, datetime.now(UTC))
    return out + unreached(cfg)


# What the State Council's rule requires for especially major (I) and major (II) emergencies.
_REQUIRED = {"authoritative_release": "发布权威信息", "press_conference": "举行新闻发布会"}


def rule_gaps(rule_sets: list[RuleSet], now: datetime) -> list[tuple[str, str]]:
    """Rule sets that would leave a serious emergency without its deadlines: none in force
    now, a stretch of time no rule set covers, or one that sets no release or press conference
    for level I or II."""
    out = []
    if not rule_set_in_force(rule_sets, now):
        out.append((
            "当前没有生效的规则集:现在申报的事件不会有任何时限,请检查规则文件的生效日期",
            "no rule set is in force now: incidents declared now get no deadlines; check the"
            " rule files' effective dates",
        ))  # fmt: skip
    ordered = sorted(rule_sets, key=lambda r: r.effective_from)
    for a, b in itertools.pairwise(ordered):
        if a.effective_until is not None and a.effective_until < b.effective_from:
            gap = f"{a.effective_until.isoformat()} — {b.effective_from.isoformat()}"
            out.append((
                f"规则集 {a.id} 与 {b.id} 之间({gap})没有生效的规则:其间发生的事件不会有时限",
                f"between rule sets {a.id} and {b.id} ({gap}) no rule is in force: incidents"
                " that occurred then get no deadlines",
            ))  # fmt: skip
    for rules in rule_sets:
        for level in ("I", "II"):
            set_ = {o.milestone for o in rules.obligations if level in o.levels}
            missing = [k for k in _REQUIRED if k not in set_]
            if missing:
                out.append((
                    f"规则集 {rules.id} 对 {level} 级事件没有设定:"
                    f"{'、'.join(_REQUIRED[k] for k in missing)}",
                    f"rule set {rules.id} sets no {' or '.join(missing)} for level {level}"
                    " incidents",
                ))  # fmt: skip
    return out


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
