"""Message templates: every channel × language renders, carries what it must, leaks nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from responder import config
from responder.engine import compose
from responder.engine.messages import CHANNEL_KINDS, Rendered, channel_kind, render
from responder.rows import Notification
from responder.timeutil import to_db

ACK_URL = "http://127.0.0.1:8080/ack/" + "AbCdEfGhIjKlMnOpQrSt_-"  # 22 url-safe chars
TITLE_ZH = "江城化工园区储罐爆炸事故"  # 12 Chinese characters

BASE_ZH: dict[str, Any] = {
    "drill": False,
    "incident_id": "INC-20261126-001",
    "title": TITLE_ZH,
    "level": "II",
    "level_name": "重大",
    "category_name": "事故灾难",
    "location": "江城市化工园区",
    "occurred_at": "2026-11-26 08:00 +08:00",
    "lead_unit": "江城市应急管理局",
    "obligation": "发布权威信息",
    "basis": "国办发〔2016〕80号",
    "deadline": "2026-11-26 13:00 +08:00",
    "deadline_short": "11月26日13:00",
    "deadline_spoken": "11月26日13时00分",
    "state": "upcoming",
    "remaining": "1小时",
    "overdue": "",
    "step_kind": "reminder",
    "collapsed": [],
    "action": "请立即组织发布权威信息",
    "ack_url": ACK_URL,
    "recipient_name": "张明",
}
BASE_EN: dict[str, Any] = {
    **BASE_ZH,
    "title": "Tank explosion at Jiangcheng chemical park",
    "level_name": "major",
    "category_name": "Accident",
    "location": "Jiangcheng chemical park",
    "lead_unit": "Jiangcheng Emergency Management Bureau",
    "obligation": "Authoritative information released",
    "basis": "State Council General Office 2016 No. 80",
    "deadline_spoken": "13:00 on 26 November",
    "remaining": "1 h",
    "action": "Organise the release of authoritative information now",
    "recipient_name": "Zhang Ming",
}


def case(name: str, lang: str) -> dict[str, Any]:
    base = BASE_ZH if lang == "zh" else BASE_EN
    if name == "upcoming_reminder":
        return dict(base)
    if name == "overdue_drill_repeat":
        return {
            **base,
            "drill": True,
            "step_kind": "repeat",
            "state": "overdue",
            "remaining": "",
            "overdue": "30分钟" if lang == "zh" else "30 min",
        }
    if name == "catch_up":
        return {
            **base,
            "step_kind": "catch_up",
            "collapsed": ["declared", "T-2h", "T-1h"],
            "remaining": "40分钟" if lang == "zh" else "40 min",
        }
    raise AssertionError(name)


CASES = ("upcoming_reminder", "overdue_drill_repeat", "catch_up")
LANGS = ("zh", "en")
DRILL_MARK = {"zh": "【演练】", "en": "[DRILL]"}


def text_of(r: Rendered) -> str:
    return f"{r.title}\n{r.body}"


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_renders_without_leaks(kind: str, lang: str, name: str) -> None:
    ctx = case(name, lang)
    r = render(kind, lang, ctx)
    text = text_of(r)
    assert r.body.strip()
    assert "{{" not in text and "{%" not in text and "}}" not in text
    assert "None" not in text
    assert ctx["title"] in text or kind == "sms"  # sms may shorten a long title
    if kind in ("sms", "email", "chat"):
        assert ACK_URL in r.body
    else:
        assert ACK_URL not in text
    if kind in ("sms", "voice"):
        assert r.title == ""
        assert "\n" not in r.body
    else:
        assert r.title.strip()
        assert "\n" not in r.title


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_drill_is_marked_in_every_channel(kind: str, lang: str) -> None:
    drill = text_of(render(kind, lang, case("overdue_drill_repeat", lang)))
    real = text_of(render(kind, lang, case("upcoming_reminder", lang)))
    if kind == "voice":
        word = "演练" if lang == "zh" else "drill"
        assert word in drill.lower()
        assert word not in real.lower()
    else:
        assert DRILL_MARK[lang] in drill
        assert DRILL_MARK[lang] not in real


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("lang", LANGS)
def test_voice_is_speakable(lang: str, name: str) -> None:
    body = render("voice", lang, case(name, lang)).body
    for bad in ("http", "【", "】", "*", "#", "[", "]", "ack/"):
        assert bad not in body
    if lang == "zh":
        assert "二级" in body and "II" not in body
        assert "11月26日13时00分" in body
        # A call that got through is not followed by an SMS (channels fail over): the link
        # may be in the SMS or the email, whichever the person was sent.
        assert body.endswith("请尽快处理。如需确认收到,请点击短信或邮件中的链接。")
    else:
        assert "Level 2" in body
        assert body.endswith("use the link in the text message or email.")
        assert " h " not in body and " min " not in body  # durations spelled out


def test_voice_states() -> None:
    assert "还剩1小时" in render("voice", "zh", case("upcoming_reminder", "zh")).body
    assert "已超时30分钟" in render("voice", "zh", case("overdue_drill_repeat", "zh")).body
    assert "30 minutes" in render("voice", "en", case("overdue_drill_repeat", "en")).body
    due = {**BASE_ZH, "state": "due_now", "step_kind": "deadline", "remaining": ""}
    assert "已到时限" in render("voice", "zh", due).body


@pytest.mark.parametrize("name", CASES)
def test_zh_sms_fits_two_segments(name: str) -> None:
    body = render("sms", "zh", case(name, "zh")).body
    assert len(body) <= 134, (len(body), body)


def test_zh_sms_typical_case_is_terse() -> None:
    body = render("sms", "zh", case("upcoming_reminder", "zh")).body
    assert len(body) <= 120, (len(body), body)
    for part in (
        "【II级重大】",
        TITLE_ZH,
        "发布权威信息",
        "江城市应急管理局发布权威信息须于11月26日13:00前完成",
        "剩余1小时",
        ACK_URL,
    ):
        assert part in body
    overdue = render("sms", "zh", case("overdue_drill_repeat", "zh")).body
    assert overdue.startswith("【演练】") and "已超时30分钟" in overdue


def test_zh_sms_shortens_a_long_title() -> None:
    ctx = {**BASE_ZH, "title": "江城市经济技术开发区化工园区危险化学品储罐区重大爆炸火灾事故"}
    body = render("sms", "zh", ctx).body
    assert len(body) <= 134 and "…" in body


@pytest.mark.parametrize("lang", LANGS)
def test_email_has_full_detail(lang: str) -> None:
    ctx = case("catch_up", lang)
    r = render("email", lang, ctx)
    for key in (
        "incident_id",
        "title",
        "category_name",
        "location",
        "occurred_at",
        "lead_unit",
        "obligation",
        "basis",
        "deadline",
        "remaining",
    ):
        assert ctx[key] in r.body, key
    assert ctx["action"] in r.body
    for step in ctx["collapsed"]:
        assert f"- {step}" in r.body
    assert ("II级(重大)" if lang == "zh" else "II (major)") in r.body
    assert ctx["title"] in r.title
    assert "<" not in r.body  # plain text, not HTML


@pytest.mark.parametrize("lang", LANGS)
def test_collapsed_steps_only_for_catch_up(lang: str) -> None:
    ctx = {**case("upcoming_reminder", lang), "collapsed": ["T-2h"]}
    assert "- T-2h" not in render("email", lang, ctx).body


@pytest.mark.parametrize("lang", LANGS)
def test_chat_is_markdown_with_link(lang: str) -> None:
    r = render("dingtalk", lang, case("overdue_drill_repeat", lang))
    assert r.body.startswith("#### ")
    assert f"]({ACK_URL})" in r.body
    assert "**" in r.body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_watchdog_without_obligation(kind: str, lang: str) -> None:
    explanation = "提醒 T-1h 已延迟12分钟未发出" if lang == "zh" else "Alert T-1h is 12 min late"
    ctx = {
        **case("upcoming_reminder", lang),
        "step_kind": "watchdog",
        "obligation": "",
        "basis": "",
        "deadline": "",
        "deadline_spoken": "",
        "state": "",
        "remaining": "",
        "action": explanation,
    }
    r = render(kind, lang, ctx)
    text = text_of(r)
    assert explanation in text
    assert "None" not in text and "{{" not in text
    assert "须于" not in text and " due " not in text
    if kind in ("email", "chat"):
        assert r.title.strip()


def test_missing_optional_keys_and_none_values() -> None:
    ctx = {
        "drill": False,
        "title": TITLE_ZH,
        "step_kind": "watchdog",
        "action": "所有通道发送失败",
        "ack_url": ACK_URL,
        "location": None,
    }
    for kind in CHANNEL_KINDS:
        text = text_of(render(kind, "zh", ctx))
        assert "None" not in text and "所有通道发送失败" in text


def test_channel_names_and_language_fallback() -> None:
    assert channel_kind("sms") == "sms"
    assert channel_kind("Voice") == "voice"
    assert channel_kind("email") == "email"
    for robot in ("dingtalk", "wecom", "feishu", "chat"):
        assert channel_kind(robot) == "chat"
    ctx = case("upcoming_reminder", "zh")
    assert render("wecom", "zh", ctx) == render("chat", "zh", ctx)
    assert render("sms", "fr", ctx) == render("sms", "zh", ctx)
    assert render("sms", "en-US", case("upcoming_reminder", "en")).body.startswith("[Level II")


@pytest.mark.parametrize(("lang", "base"), [("zh", BASE_ZH), ("en", BASE_EN)])
def test_free_text_cannot_add_links_or_html_to_a_chat_message(
    lang: str, base: dict[str, Any]
) -> None:
    """A title or location written as markdown would otherwise render as a second, false
    "acknowledge" link (or raw HTML) beside the real one."""
    ctx = {
        **base,
        "title": "燃气泄漏 [确认收到](https://evil.example/phish)",
        "location": '东区 ![x](https://evil.example/p.png) <a href="https://evil.example">点此</a>',
    }
    r = render("chat", lang, ctx)
    assert "](https://evil.example" not in r.body and "<a " not in r.body
    assert "［确认收到］(https://evil.example/phish)" in r.body  # the text still reads
    assert "＜a href" in r.body
    assert r.body.count("](") == 1 and f"]({base['ack_url']})" in r.body  # only the real link
    assert "[确认收到]" not in r.title


# -- what compose.build gives the templates, with the example config ------------------------

CFG = config.load(Path(__file__).resolve().parents[2] / "config" / "responder.toml")
OCCURRED = datetime(2026, 11, 26, 19, 40, tzinfo=UTC)  # 03:40 on the 27th in Asia/Shanghai
INCIDENT = {
    "id": "INC-20261127-0001",
    "title": TITLE_ZH,
    "level": "II",
    "category": "accident",
    "location": "江城市化工园区",
    "occurred_at": to_db(OCCURRED),
    "lead_unit": "emergency",
    "drill": 0,
}


def built(
    kind: str, lang: str, now: datetime, saved: dict[str, Any] | None = None, **obligation: Any
) -> dict[str, Any]:
    """The context the dispatcher would render: a notification of ``kind`` about the 5-hour
    release (or, with ``obligation=None`` / ``incident=None``, a watchdog message)."""
    row = Notification(
        id=1,
        incident_id=None,
        obligation_id=None,
        person_id="",
        channels=["sms"],
        channel_index=0,
        attempt=0,
        kind=kind,
        context=saved or {},
        ack_nonce="",
    )
    incident = obligation.pop("incident", INCIDENT)
    ob = None
    if obligation.pop("obligation", True) is not None:
        ob = {
            "kind": "authoritative_release",
            "name": "发布权威信息",
            "name_en": "Authoritative information released",
            "deadline": to_db(OCCURRED + timedelta(hours=5)),
            "rule_set_id": "gbf-2016-80",
            "status": "open",
            **obligation,
        }
    person = CFG.person("wang-fang" if lang == "zh" else "admin-liu")
    assert person is not None
    return compose.build(row, incident, ob, CFG, person, ACK_URL, now)


LAG = {
    "action": "提醒服务已滞后12分钟(提醒未按时发出),请立即检查服务",
    "action_en": "Alerts are running 12 min late: check the service now",
}


@pytest.mark.parametrize("lang", LANGS)
def test_a_service_alert_says_what_is_wrong_and_invents_no_incident(lang: str) -> None:
    """The watchdog's lag alert concerns no incident: no message may present the service's
    own name as one ("事件:responder"), and the subject an administrator sees in the inbox
    list says what is wrong."""
    ctx = built("watchdog", lang, OCCURRED, LAG, incident=None, obligation=None)
    action = LAG["action" if lang == "zh" else "action_en"]
    for kind in CHANNEL_KINDS:
        text = text_of(render(kind, lang, ctx))
        assert action in text
        assert "responder" not in text, (kind, text)
    assert action in render("email", lang, ctx).title
    assert action in render("chat", lang, ctx).title


@pytest.mark.parametrize("lang", LANGS)
def test_the_subject_of_a_failed_delivery_alert_names_the_failure(lang: str) -> None:
    failed = {
        "action": "发给王芳的提醒在所有渠道均发送失败,请电话联系并检查渠道配置",
        "action_en": "The alert to 王芳 failed on every channel: phone them",
    }
    ctx = built("watchdog", lang, OCCURRED, failed, obligation=None)
    for kind in ("email", "chat"):
        title = render(kind, lang, ctx).title
        assert failed["action" if lang == "zh" else "action_en"] in title and TITLE_ZH in title


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", ["email", "chat"])
def test_a_catch_up_does_not_claim_the_points_passed_before_the_declaration(
    kind: str, lang: str
) -> None:
    """A catch-up also follows downtime (the service back after its alert points passed):
    'passed when the incident was declared' would then be false."""
    ctx = case("catch_up", lang)
    body = render(kind, lang, ctx).body
    assert "T-2h" in body and ("已过" in body if lang == "zh" else "already passed" in body)
    assert "登记时" not in body and "at declaration" not in body
    assert "when the incident was declared" not in body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_the_breach_alert_says_the_duty_was_not_done(kind: str, lang: str) -> None:
    """At the deadline step the duty was missed (met duties get no message).  A leader
    reading only '已到时限' / 'due now' could take it for a neutral reminder."""
    at_deadline = OCCURRED + timedelta(hours=5, seconds=2)
    ctx = built("deadline", lang, at_deadline, {"step": "deadline"}, status="breached")
    assert ctx["state"] == "due_now"
    r = render(kind, lang, ctx)
    said = "尚未完成" if lang == "zh" else "not done"
    assert said in r.body.lower(), r.body
    if kind in ("email", "chat"):
        assert said in r.title.lower(), r.title


PRODUCTION_ACK = "https://yjxx.jiangcheng.gov.cn/ack/" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"


@pytest.mark.parametrize(
    ("kind", "hours", "says"),
    [
        ("notice", 0.25, "剩余4小时45分钟"),
        ("reminder", 4.5, "剩余30分钟"),
        ("deadline", 5, "已到时限,尚未完成"),
        ("repeat", 6.5, "已超时1小时30分钟"),
    ],
)
def test_the_zh_sms_names_the_unit_and_fits_two_segments_with_a_real_address(
    kind: str, hours: float, says: str
) -> None:
    """Counted on the rendered text with a production link (not 127.0.0.1): a leader told
    of a breach must see which unit missed it, without opening anything."""
    ctx = built(kind, "zh", OCCURRED + timedelta(hours=hours))
    ctx["ack_url"] = PRODUCTION_ACK
    body = render("sms", "zh", ctx).body
    assert len(body) <= 134, (len(body), body)
    assert "区应急管理局发布权威信息须于11月27日08:40前完成" in body  # the date: 03:40 + 5 h
    assert says in body and body.endswith("确认:" + PRODUCTION_ACK)


@pytest.mark.parametrize("lang", LANGS)
def test_voice_names_the_lead_unit(lang: str) -> None:
    ctx = built("deadline", lang, OCCURRED + timedelta(hours=5, seconds=1))
    unit = "区应急管理局" if lang == "zh" else "Emergency Management Bureau"
    assert unit in render("voice", lang, ctx).body
    assert ". Obligation:" in render("voice", "en", built("deadline", "en", OCCURRED)).body


@pytest.mark.parametrize(("lang", "mark"), [("zh", "【超时】"), ("en", "[OVERDUE]")])
@pytest.mark.parametrize(("kind", "hours"), [("deadline", 5), ("repeat", 6.5)])
def test_the_breach_sms_is_marked_overdue_like_the_email_and_chat(
    kind: str, hours: float, lang: str, mark: str
) -> None:
    breach = render("sms", lang, built(kind, lang, OCCURRED + timedelta(hours=hours))).body
    reminder = render("sms", lang, built("reminder", lang, OCCURRED + timedelta(hours=4))).body
    assert breach.startswith(mark) and mark not in reminder


def merged(kind: str, lang: str, hours: float, status: str = "open") -> dict[str, Any]:
    """A message telling of the release (``kind``) and of the press conference (a notice)."""
    press = {
        "kind": "press_conference",
        "name": "举行新闻发布会",
        "name_en": "Press conference held",
        "deadline": to_db(OCCURRED + timedelta(hours=24)),
        "rule_set_id": "gbf-2016-80",
        "status": "open",
    }
    ctx = built(kind, lang, OCCURRED + timedelta(hours=hours), status=status)
    row = Notification(1, None, None, "", ["sms"], 0, 0, kind, {}, "")
    ob = {**press, "kind": "authoritative_release", "name": "发布权威信息",
          "name_en": "Authoritative information released",
          "deadline": to_db(OCCURRED + timedelta(hours=5)), "status": status}  # fmt: skip
    person = CFG.person("wang-fang" if lang == "zh" else "admin-liu")
    assert person is not None and ctx["title"]
    now = OCCURRED + timedelta(hours=hours)
    return compose.build(row, INCIDENT, ob, CFG, person, PRODUCTION_ACK, now, [("notice", press)])


def test_a_merged_zh_sms_lists_each_deadline_in_two_segments_with_a_real_address() -> None:
    body = render("sms", "zh", merged("notice", "zh", 0.25)).body
    assert len(body) <= 134, (len(body), body)
    assert "区应急管理局发布权威信息截止08:40;举行新闻发布会截止次日03:40。" in body
    breach = render("sms", "zh", merged("deadline", "zh", 6.5, "breached")).body
    assert breach.startswith("【超时】") and len(breach) <= 201, (len(breach), breach)
    assert "发布权威信息截止08:40,已超时1小时30分钟;举行新闻发布会截止次日03:40" in breach


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_every_channel_lists_each_duty_of_a_merged_message(kind: str, lang: str) -> None:
    ctx = merged("deadline", lang, 5.5, "breached")
    text = text_of(render(kind, lang, ctx))
    for name in ("发布权威信息", "举行新闻发布会") if lang == "zh" else (
        "Authoritative information released", "Press conference held"
    ):  # fmt: skip
        assert name in text, text
    if kind in ("email", "chat", "voice"):  # the full deadline of each
        assert ("11月28日3时40分" if lang == "zh" else "03:40 on November 28") in text or (
            "2026-11-28 03:40" in text
        ), text
