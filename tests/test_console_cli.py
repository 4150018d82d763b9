"""``responder plan`` as a duty officer reads it (issue 15, item 9): steps in words, the people
each step reaches, ``II级`` as everywhere else — the same words as the declare page's preview."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from responder.cli import main
from tests.test_cli import CONFIG, PLAN_II, ROOT, clean_env, one_error_line, run

LANG_VARIABLES = ("RESPONDER_LANG", "LC_ALL", "LC_MESSAGES", "LANG")

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


# -- one language a run (issue 15): --lang, $RESPONDER_LANG, the locale, the config ----------

CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
BOTH = ("注意 note", "配置错误 config error", "命令行有误 usage error", "令牌编号 token id")


def a_session(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *lang: str
) -> list[tuple[int, str]]:
    """What an administrator's first session prints, each command's exit and output: a usage
    error, a bad flag value, a config that cannot be read, a refusal, a database made, users,
    tokens, the audit log."""
    db = ["--db", str(tmp_path / "lang.sqlite3")]
    said: list[tuple[int, str]] = []
    for argv in (
        ["user", "add", "x", "--role", "god"],
        ["token", "revoke", "0"],
        ["--config", str(tmp_path), "check-config"],
    ):
        with pytest.raises(SystemExit) as exited:  # argparse's way out
            code = main([*lang, *argv])
            raise SystemExit(code)
        said.append((int(str(exited.value.code)), capsys.readouterr().err))
    for argv in (
        ["user", "add", "chen", "--role", "duty_officer", "--no-password", *db],
        ["user", "add", "chen", "--role", "viewer", "--no-password", *db],
        ["token", "create", "chen", "--days", "30", *db],
        ["token", "list", *db],
        ["user", "disable", "chen", *db],
        ["user", "list", *db],
        ["verify-audit", *db],
        ["plan", "--level", "II", "--occurred-at", "2026-11-26T09:00:00+08:00",
         "--declared-at", "2026-11-26T08:00:00+08:00"],
    ):  # fmt: skip
        code, out, err = run(capsys, *lang, *argv)
        if argv[:2] != ["token", "create"]:  # the token itself is neither language
            err = out + err
        said.append((code, err))
    return said


def test_every_message_of_a_run_is_in_the_one_language_chosen(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Some lines were "中文 / English", some Chinese only, the usage errors "命令行有误 usage
    error": now each run speaks Chinese (the default) or, with --lang en, English only."""
    zh = a_session(capsys, tmp_path / "zh")
    assert [code for code, _ in zh] == [2, 2, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    for _, text in zh:
        assert CJK.search(text), text
        for both in BOTH:
            assert both not in text
        assert not re.search(r"\b(note|error|added|disabled|entries|valid until)\b", text), text
    assert "命令行有误:argument --role: invalid choice" in zh[0][1]
    assert "令牌编号须为 token list 显示的数字,收到“0”" in zh[1][1]
    assert "用户 chen 已存在" in zh[4][1]
    assert "审计日志完好,共 3 条" in zh[9][1]

    en = a_session(capsys, tmp_path / "en", "--lang", "en")
    assert [code for code, _ in en] == [code for code, _ in zh]
    for _, text in en:
        assert not CJK.search(text), text
    assert en[0][1].startswith("responder: usage error: argument --role: invalid choice")
    assert "a token id is the number token list shows, not '0'" in en[1][1]
    assert en[2][1].startswith(f"responder: config error: {tmp_path / 'en'}: ")
    assert "did not exist: created a new, empty one" in en[3][1]
    assert "user chen exists" in en[4][1]
    assert "token id 1 (revoke: responder token revoke 1)" in en[5][1]
    assert en[6][1].startswith("id\tuser\trole\tname\tcreated")
    assert "audit log intact, 3 entries" in en[9][1]
    assert "--occurred-at cannot be after the declaration time" in en[10][1]


@pytest.mark.parametrize(
    ("env", "argv", "lang"),
    [
        ({}, [], "zh"),  # nothing says: the product's language
        ({"LANG": "en_US.UTF-8"}, [], "en"),
        ({"LANG": "zh_CN.UTF-8"}, [], "zh"),
        ({"LANG": "C.UTF-8"}, [], "zh"),  # a container: the config's service.language
        ({"LANG": "en_GB.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, [], "zh"),  # LC_ALL wins, as in POSIX
        ({"LANG": "en_US.UTF-8", "LC_ALL": "C"}, [], "zh"),
        ({"LANG": "en_US.UTF-8", "RESPONDER_LANG": "zh"}, [], "zh"),
        ({"RESPONDER_LANG": "en"}, [], "en"),
        ({"RESPONDER_LANG": "en"}, ["--lang", "zh"], "zh"),
        ({"LANG": "zh_CN.UTF-8"}, ["--lang=en"], "en"),
        ({}, ["--la", "en"], "en"),  # argparse takes the abbreviation: so do we
    ],
)
def test_the_language_comes_from_the_flag_then_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    argv: list[str],
    lang: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, *argv, *PLAN_II)
    assert code == 0 and err == ""
    assert ("Deadlines:" in out) == (lang == "en") and ("事件级别" in out) == (lang == "zh")


def test_a_config_in_english_is_followed_when_nothing_else_chooses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = (ROOT / "config" / "responder.toml").read_text(encoding="utf-8")
    assert '\nlanguage = "zh"\n' in example
    (tmp_path / "rules").symlink_to(ROOT / "config" / "rules")
    path = tmp_path / "responder.toml"
    path.write_text(example.replace('\nlanguage = "zh"\n', '\nlanguage = "en"\n', 1), "utf-8")
    monkeypatch.setenv("LANG", "C.UTF-8")
    code = main(["--config", str(path), *PLAN_II])
    assert code == 0 and "Deadlines:" in capsys.readouterr().out
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")  # the person's locale beats the server's default
    code = main(["--config", str(path), *PLAN_II])
    assert code == 0 and "Deadlines:" not in capsys.readouterr().out


def test_a_real_process_follows_its_locale(tmp_path: Path) -> None:
    """The locale is the process's: a usage error and a refusal of a real `responder`, run
    with LANG=en_US.UTF-8 and then with no locale at all."""
    base = {k: v for k, v in os.environ.items() if k not in LANG_VARIABLES}
    argv = [sys.executable, "-m", "responder.cli", "--config", CONFIG]
    for env, words in (({"LANG": "en_US.UTF-8"}, "usage error"), ({}, "命令行有误")):
        done = subprocess.run(
            [*argv, "token", "create", "chen", "--days", "abc"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env={**base, **env},
            timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(f"responder: {words}")
        assert len(done.stderr.splitlines()) == 1
