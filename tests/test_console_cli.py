"""``responder plan`` as a duty officer reads it (issue 15, item 9): steps in words, the people
each step reaches, ``II级`` as everywhere else — the same words as the declare page's preview."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.test_cli import PLAN_II, clean_env, one_error_line, run

__all__ = ["clean_env"]  # the environment is cleared for these tests too


def test_plan_says_each_step_in_words_and_who_it_reaches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, *PLAN_II)
    assert code == 0 and err == ""
    assert "事件级别:II级(重大)" in out and "II 级" not in out
    assert "发布权威信息:时限前2小时提醒" in out
    assert "到期:超时告警(先用语音电话、短信、邮件;此后每30分钟重复,直到完成)" in out
    assert "→ 牵头单位的负责人、牵头单位的新闻发言人、值班员(区政府办公室 陈静)" in out
    for raw in ("head@lead", "@#office", "min ×", "T-2h"):
        assert raw not in out, raw


def test_plan_names_the_people_for_a_lead_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *PLAN_II, "--lead-unit", "health")
    assert code == 0
    assert "→ 赵敏(区卫生健康委员会)、孙丽(区卫生健康委员会)、陈静(区政府办公室)" in out
    code, out, _ = run(capsys, *PLAN_II, "--lead-unit", "emergency", "--lang", "en")
    assert code == 0 and "Level: II (major)" in out
    assert "reminder 2 h before the deadline" in out
    assert "→ 王芳 (Emergency Management Bureau), 李强 (Emergency Management Bureau)" in out
    assert "负责人" not in out  # one language
    code, out, err = run(capsys, *PLAN_II, "--lead-unit", "nowhere")
    assert code == 1 and out == ""
    assert "未知单位“nowhere”" in one_error_line(err)


def test_a_late_plan_says_the_breach_alert_goes_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "plan", "--level", "II", "--occurred-at", "2026-11-26T08:00:00+08:00",
        "--declared-at", "2026-11-26T14:00:00+08:00",
    )  # fmt: skip
    assert code == 0
    assert "2026-11-26T14:00:00+08:00  发布权威信息:已超时:立即补发超时告警" in out


def test_adding_a_user_that_exists_says_so_before_asking_for_a_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's first steps add `chen`; run twice (or after `--no-password`), the command
    asked for a password and only then said the user exists.  Now it says so first — here
    with nothing on stdin, where asking would have failed with "no password given"."""
    db = ["--db", str(tmp_path / "cli.sqlite3")]
    code, _, _ = run(capsys, "user", "add", "chen", "--role", "duty_officer", "--no-password", *db)
    assert code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, "user", "add", "chen", "--role", "duty_officer", *db)
    line = one_error_line(err)
    assert code == 1 and out == ""
    assert "用户 chen 已存在" in line and "responder user password chen" in line
    code, out, err = run(capsys, "user", "add", "CHEN", "--role", "duty_officer", *db)
    assert code == 1 and "已有用户 chen,与 CHEN 只差大小写" in one_error_line(err)
