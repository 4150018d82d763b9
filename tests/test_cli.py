"""The ``responder`` command, run in-process: output, exit codes, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import responder
from responder.cli import main
from responder.config import load as load_config
from responder.engine.compose import channel_url
from responder.store.audit import _digest
from tests.sinks import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "config" / "responder.toml")
PLAN_II = [
    "plan",
    "--level",
    "II",
    "--occurred-at",
    "2026-11-26T08:00:00+08:00",
    "--declared-at",
    "2026-11-26T08:30:00+08:00",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "RESPONDER_CONFIG",
        "RESPONDER_DB",
        "RESPONDER_PUBLIC_URL",
        "RESPONDER_DEV_INBOX",
        "RESPONDER_PASSWORD",
        "RESPONDER_SECRET",
        # The language: the product's default (Chinese) unless a test chooses.
        "RESPONDER_LANG",
        "LC_ALL",
        "LC_MESSAGES",
        "LANG",
    ):
        monkeypatch.delenv(name, raising=False)
    # No server secret unless a test makes one: the key file is var/secret.key under the
    # working directory (commands key their audit entries with it when it exists).
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", CONFIG, *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("responder: ")
    return lines[0]


# -- plan ---------------------------------------------------------------------------


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *PLAN_II)
    assert code == 0 and err == ""
    assert "2026-11-26T13:00:00+08:00  发布权威信息" in out
    assert "2026-11-27T08:00:00+08:00  举行新闻发布会" in out
    assert "gbf-2016-80" in out


def test_plan_declared_now_shows_whole_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """A late declaration's catch-up is due "now": 12:02:36, not 12:02:35.333949."""
    occurred = (datetime.now(UTC) - timedelta(hours=6)).isoformat(timespec="seconds")
    code, out, _ = run(capsys, "plan", "--level", "II", "--occurred-at", occurred)
    assert code == 0 and "补发" in out
    assert not re.search(r"\d:\d\d\.\d", out), out


def test_plan_text_in_english(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *PLAN_II, "--lang", "en")
    assert code == 0
    assert "Deadlines:" in out
    assert "2026-11-26T13:00:00+08:00  Authoritative information released" in out
    assert "2026-11-27T08:00:00+08:00  Press conference held" in out


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *PLAN_II, "--json")
    assert code == 0
    view = json.loads(out)
    assert view["rule_set"]["id"] == "gbf-2016-80"
    assert [(o["kind"], o["deadline"], o["status"]) for o in view["obligations"]] == [
        ("authoritative_release", "2026-11-26T13:00:00+08:00", "open"),
        ("press_conference", "2026-11-27T08:00:00+08:00", "open"),
    ]
    assert view["declared_at"] == "2026-11-26T08:30:00+08:00"
    # the declaration notice is due at once, the breach alert at the deadline
    first = view["steps"][0]
    assert first["name"] == "declared" and first["due_at"] == "2026-11-26T08:30:00+08:00"
    assert [s["due_at"] for s in view["steps"] if s["breach"]] == [
        "2026-11-26T13:00:00+08:00",
        "2026-11-27T08:00:00+08:00",
    ]


def test_plan_takes_a_time_a_little_ahead_of_the_clock_as_now(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ahead = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds")
    code, out, _ = run(capsys, "plan", "--level", "II", "--occurred-at", ahead, "--json")
    assert code == 0
    view = json.loads(out)
    # Now, in whole seconds: this second, as a declaration now would take it; "declared now"
    # is the next whole second (or this one, on the second exactly).
    occurred, declared = (datetime.fromisoformat(view[k]) for k in ("occurred_at", "declared_at"))
    assert timedelta(0) <= declared - occurred <= timedelta(seconds=1)
    assert abs(occurred - datetime.now(UTC)) < timedelta(seconds=30)
    too_far = (datetime.now(UTC) + timedelta(minutes=3)).isoformat(timespec="seconds")
    code, _, err = run(capsys, "plan", "--level", "II", "--occurred-at", too_far)
    assert code == 1 and "不能晚于申报时间" in one_error_line(err)


def test_plan_json_for_a_late_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "--level",
        "I",
        "--occurred-at",
        "2026-11-26T08:00:00+08:00",
        "--declared-at",
        "2026-11-26T14:00:00+08:00",
        "--json",
    )
    assert code == 0
    view = json.loads(out)
    assert [o["status"] for o in view["obligations"]] == ["breached", "open"]
    [catch_up] = [s for s in view["steps"] if s["obligation"] == "authoritative_release"]
    assert catch_up["kind"] == "catch_up" and catch_up["breach"] is True
    assert catch_up["due_at"] == "2026-11-26T14:00:00+08:00"


@pytest.mark.parametrize("level", ["III", "IV"])
def test_plan_low_level_has_no_obligations(capsys: pytest.CaptureFixture[str], level: str) -> None:
    args = ["plan", "--level", level, "--occurred-at", "2026-11-26T08:00:00+08:00"]
    code, out, _ = run(capsys, *args, "--json")
    assert code == 0
    view = json.loads(out)
    assert view["obligations"] == [] and view["steps"] == []
    code, out, _ = run(capsys, *args)
    assert code == 0 and "没有发布时限要求" in out


def test_plan_under_the_2016_local_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "--level",
        "II",
        "--occurred-at",
        "2016-06-01T08:00:00+08:00",
        "--declared-at",
        "2016-06-01T08:10:00+08:00",
        "--json",
    )
    assert code == 0
    view = json.loads(out)
    assert view["rule_set"]["id"] == "js-2016-local"
    assert view["obligations"][0]["deadline"] == "2016-06-01T14:00:00+08:00"


@pytest.mark.parametrize(
    "args",
    [
        ["--occurred-at", "2026-11-26T08:00:00"],
        ["--occurred-at", "2026-11-26T08:00:00+08:00", "--declared-at", "2026-11-26T08:30:00"],
        ["--occurred-at", "yesterday"],
        [
            "--occurred-at",
            "2026-11-26T09:00:00+08:00",
            "--declared-at",
            "2026-11-26T08:00:00+08:00",
        ],
    ],
)
def test_plan_bad_times_exit_1_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run(capsys, "plan", "--level", "II", *args)
    assert code == 1 and out == ""
    one_error_line(err)


def test_naive_time_message_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "--lang", "en", "plan", "--level", "II", "--occurred-at", "2026-11-26T08:00:00"
    )
    assert code == 1
    line = one_error_line(err)
    assert "--occurred-at" in line and "offset" in line


# -- check-config ---------------------------------------------------------------------


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check-config")
    assert code == 0 and err.startswith("responder: 注意:开发收件箱已开启")  # the example's
    assert out.startswith("OK: ") and "个单位" in out
    assert "gbf-2016-80" in out and "js-2016-local" in out


GOOD_UNITS = """
[channels]
sms = "json://gateway.example/send?:to={phone}"

[[units]]
id = "emergency"
name = "应急管理局"
"""


def write_config(tmp_path: Path, body: str, rules: str | None = None) -> Path:
    path = tmp_path / "responder.toml"
    rule_line = 'rules = ["rules/*.toml"]'
    if rules is not None:
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "r.toml").write_text(rules, encoding="utf-8")
    else:
        rule_line = f'rules = ["{ROOT / "config" / "rules" / "gbf-2016-80.toml"}"]'
    path.write_text(f"[service]\n{rule_line}\n{body}", encoding="utf-8")
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert out == ""
    return code, one_error_line(err)


def test_broken_config_unknown_unit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        GOOD_UNITS
        + """
[[people]]
id = "wang"
name = "王"
unit = "fire-brigade"
roles = ["head"]
phone = "+8613800000001"
channels = ["sms"]
""",
    )
    code, line = check(capsys, path)
    assert code == 1
    assert str(path) in line
    assert "people[0]" in line and "fire-brigade" in line


@pytest.mark.parametrize("value", ['"0s"', '"2h"'])
def test_a_send_timeout_out_of_bounds_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str
) -> None:
    path = write_config(tmp_path, f"[alerts]\nsend_timeout = {value}\n" + GOOD_UNITS)
    code, line = check(capsys, path)
    assert code == 1
    assert "alerts.send_timeout" in line and "between 1s and 1h" in line


def test_a_unit_given_twice_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD_UNITS + '[[units]]\nid = "emergency"\nname = "又一个"\n')
    code, line = check(capsys, path)
    assert code == 1 and "two units share the id 'emergency'" in line


def test_broken_config_missing_env(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[channels]
email = "mailtos://${SMTP_USER_FOR_TEST}:secret@smtp.example.gov.cn?to={email}"
""",
    )
    code, line = check(capsys, path)
    assert code == 1
    assert str(path) in line
    assert "channels.email" in line and "SMTP_USER_FOR_TEST" in line


def test_broken_config_person_channel_needs_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_config(
        tmp_path,
        GOOD_UNITS
        + """
[[people]]
id = "wang"
name = "王"
unit = "emergency"
roles = ["head"]
channels = ["sms"]
""",
    )
    code, line = check(capsys, path)
    assert code == 1
    assert str(path) in line and "people[0]" in line and "phone" in line


def test_broken_rule_set_names_its_file_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = (ROOT / "config" / "rules" / "gbf-2016-80.toml").read_text(encoding="utf-8")
    path = write_config(tmp_path, GOOD_UNITS, rules=rules.replace('"I", "II"]', '"I", "V"]', 1))
    code, line = check(capsys, path)
    assert code == 1
    assert str(tmp_path / "rules" / "r.toml") in line
    assert "obligations.0.levels" in line and "'V'" in line


def test_rule_set_without_a_deadline_step_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = (ROOT / "config" / "rules" / "js-2016-local.toml").read_text(encoding="utf-8")
    broken = "\n".join(
        line for line in rules.splitlines() if not line.startswith('  { name = "deadline"')
    )
    path = write_config(tmp_path, GOOD_UNITS, rules=broken)
    code, line = check(capsys, path)
    assert code == 1
    assert str(tmp_path / "rules" / "r.toml") in line
    assert "escalation 'default' needs exactly one step at the deadline" in line


def test_rule_set_step_names_the_engine_uses_are_reserved(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = (ROOT / "config" / "rules" / "js-2016-local.toml").read_text(encoding="utf-8")
    path = write_config(
        tmp_path, GOOD_UNITS, rules=rules.replace('{ name = "T-1h"', '{ name = "repeat"', 1)
    )
    code, line = check(capsys, path)
    assert code == 1
    assert "step name 'repeat' is reserved" in line


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, line = check(capsys, tmp_path / "nope.toml")
    assert code == 1 and "nope.toml" in line


# -- users, tokens, audit ---------------------------------------------------------------


def db_args(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "cli.sqlite3")]


def add_users(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    code, out, err = run(
        capsys, "user", "add", "duty.zhang", "--role", "duty_officer", *db_args(tmp_path)
    )
    # The first command makes the database, and says so: a mistyped --db would stand out.
    assert code == 0 and "duty.zhang" in out
    assert err == (
        f"responder: 注意:数据库 {tmp_path / 'cli.sqlite3'} 不存在,已新建空数据库;"
        "如应已有数据,请检查路径(--db、$RESPONDER_DB 或 service.database)\n"
    )
    code, out, err = run(
        capsys, "token", "create", "duty.zhang", "--name", "ci", *db_args(tmp_path)
    )
    # The token alone on stdout (TOKEN=$(…)); its id, for revoking it, on stderr.
    assert code == 0 and "令牌编号 1" in err and "responder token revoke 1" in err
    token = out.strip()
    code, _, _ = run(capsys, "user", "add", "reviewer-li", "--role", "reviewer", *db_args(tmp_path))
    assert code == 0
    return token


def test_user_add_and_token_create(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    token = add_users(capsys, tmp_path)
    assert token.startswith("rsp_") and len(token) > 40 and "\n" not in token
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        (stored,) = conn.execute(
            "SELECT password_hash FROM users WHERE username = 'duty.zhang'"
        ).fetchone()
        assert stored.startswith("scrypt$") and "correct horse" not in stored
        hashes = [r[0] for r in conn.execute("SELECT token_hash FROM tokens")]
        assert hashes and token not in hashes  # only the hash is kept
    # a second user of the same name, a weak password, an unknown user: one line, exit 1
    code, _, err = run(capsys, "user", "add", "duty.zhang", "--role", "viewer", *db_args(tmp_path))
    assert code == 1 and "duty.zhang" in one_error_line(err)
    monkeypatch.setenv("RESPONDER_PASSWORD", "short")
    code, _, err = run(capsys, "user", "add", "wang", "--role", "viewer", *db_args(tmp_path))
    assert code == 1
    one_error_line(err)
    code, out, err = run(capsys, "token", "create", "nobody", *db_args(tmp_path))
    assert code == 1 and out == "" and "nobody" in one_error_line(err)


def test_token_list_user_list_and_disable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An administrator told that a token leaked finds its id, revokes it, and can stop a
    person who left at once."""
    monkeypatch.delenv("SUDO_USER", raising=False)  # this test sets it itself, later
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    token = add_users(capsys, tmp_path)
    code, out, err = run(capsys, "token", "list", *db_args(tmp_path))
    assert code == 0 and err == ""
    header, row = out.splitlines()
    assert header.split("\t")[0] == "编号"
    assert row.split("\t")[:4] == ["1", "duty.zhang", "duty_officer", "ci"]
    assert token not in out  # never shown again: only its hash is stored
    code, out, _ = run(capsys, "token", "list", "reviewer-li", *db_args(tmp_path))
    assert code == 0 and len(out.splitlines()) == 1  # the header only
    code, _, err = run(capsys, "token", "list", "reviewer-lee", *db_args(tmp_path))
    assert code == 1 and one_error_line(err) == "responder: 找不到用户 reviewer-lee"  # a typo
    with pytest.raises(SystemExit) as done:  # past SQLite's integers: a usage error, no traceback
        run(capsys, "token", "revoke", str(2**64), *db_args(tmp_path))
    assert done.value.code == 2 and "令牌编号须为 token list 显示的数字" in capsys.readouterr().err
    code, out, _ = run(capsys, "token", "revoke", "1", *db_args(tmp_path))
    assert code == 0
    code, out, _ = run(capsys, "token", "list", *db_args(tmp_path))
    assert out.splitlines()[1].split("\t")[6].startswith("20")  # revoked at
    code, out, err = run(capsys, "user", "disable", "duty.zhang", *db_args(tmp_path))
    assert code == 0 and "duty.zhang" in out
    code, out, _ = run(capsys, "user", "list", *db_args(tmp_path))
    users = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()[1:]}
    assert users["duty.zhang"][1:4] == ["duty_officer", "停用", "是"]
    assert users["reviewer-li"][2] == "启用"
    code, out, err = run(capsys, "token", "create", "duty.zhang", *db_args(tmp_path))
    assert code == 1 and out == "" and "user enable" in one_error_line(err)
    code, _, _ = run(capsys, "user", "enable", "duty.zhang", *db_args(tmp_path))
    assert code == 0
    code, _, err = run(capsys, "user", "disable", "nobody", *db_args(tmp_path))
    assert code == 1 and "nobody" in one_error_line(err)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        rows = conn.execute("SELECT action, actor FROM audit_log ORDER BY seq").fetchall()
    assert [a for a, _ in rows[-3:]] == ["token.revoked", "user.disabled", "user.enabled"]
    # Who did it: the account that ran the command, not just "cli".
    account = pwd.getpwuid(os.geteuid()).pw_name
    assert {actor for _, actor in rows} == {f"cli:{account}"}
    monkeypatch.setenv("SUDO_USER", "chen-admin")
    run(capsys, "user", "disable", "duty.zhang", *db_args(tmp_path))
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        (actor,) = conn.execute("SELECT actor FROM audit_log ORDER BY seq DESC").fetchone()
    assert actor == f"cli:{account} (sudo by chen-admin)"


def test_user_password_sets_a_page_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user added for the API only later needs the pages; a forgotten password is reset."""
    code, _, _ = run(capsys, "user", "add", "zhou", "--role", "viewer", "--no-password",
                     *db_args(tmp_path))  # fmt: skip
    assert code == 0
    monkeypatch.setenv("RESPONDER_PASSWORD", "short")
    code, out, err = run(capsys, "user", "password", "zhou", *db_args(tmp_path))
    assert code == 1 and out == "" and "10" in one_error_line(err)
    monkeypatch.setenv("RESPONDER_PASSWORD", "zhou's long new password")
    code, out, err = run(capsys, "user", "password", "nobody", *db_args(tmp_path))
    assert code == 1 and "nobody" in one_error_line(err)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        assert conn.execute("SELECT password_hash FROM users").fetchone() == (None,)
    code, out, err = run(capsys, "user", "password", "zhou", *db_args(tmp_path))
    assert code == 0 and "zhou" in out and err == ""
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert stored.startswith("scrypt$") and "new password" not in stored
    assert actions == ["user.added", "user.password_set"]  # the refusals changed nothing
    code, out, _ = run(capsys, "user", "list", *db_args(tmp_path))
    assert out.splitlines()[1].split("\t")[3] == "是"  # can log in now


def test_token_with_an_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token for a trial or a contractor ends by itself; the list shows when, and which
    have ended, so they are replaced before an integration stops at night."""
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    add_users(capsys, tmp_path)  # token 1: until revoked
    for bad in ("0", "-3", "3651"):
        code, out, err = run(capsys, "token", "create", "duty.zhang", "--days", bad,
                             *db_args(tmp_path))  # fmt: skip
        assert code == 1 and out == "" and "--days" in one_error_line(err)
    code, out, err = run(capsys, "token", "create", "duty.zhang", "--days", "30",
                         *db_args(tmp_path))  # fmt: skip
    assert code == 0 and out.startswith("rsp_") and "令牌编号 2" in err
    until = re.search(r"有效期至 (\S+ \S+ \+08:00)", err)
    assert until is not None, err
    expected = datetime.now(UTC) + timedelta(days=30)
    shown = datetime.strptime(until.group(1), "%Y-%m-%d %H:%M %z")
    assert abs(shown - expected) < timedelta(minutes=2)
    code, out, _ = run(capsys, "token", "list", *db_args(tmp_path))
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert rows["编号"][7] == "过期"
    assert rows["1"][7] == ""  # until revoked
    assert rows["2"][7] == until.group(1)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:  # as if 31 days had passed
        conn.execute("UPDATE tokens SET expires_at = '2020-01-01T00:00:00.000000Z' WHERE id = 2")
    code, out, _ = run(capsys, "token", "list", *db_args(tmp_path))
    assert out.splitlines()[1].split("\t")[7] == "2020-01-01 08:00 +08:00(已过期)"
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        (payload,) = conn.execute(
            "SELECT data FROM audit_log WHERE action = 'token.created' ORDER BY seq DESC"
        ).fetchone()
    assert json.loads(payload)["expires_at"].startswith(str(expected.year))


def verify_audit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str, str]:
    """In English: the verdicts below are asserted in the words of ``audit.verify``'s
    English half (the Chinese one is checked in test_verify_audit_speaks_chinese_by_default)."""
    return run(capsys, "--lang", "en", "verify-audit", *db_args(tmp_path))


def test_verify_audit_ok_then_tampered_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    add_users(capsys, tmp_path)
    code, out, err = verify_audit(capsys, tmp_path)
    assert code == 0 and err == ""
    assert "OK" in out and "3 entries" in out

    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        # the triggers refuse a plain edit ...
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
        # ... so a tamperer drops them first
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("""UPDATE audit_log SET data = '{"role":"admin"}' WHERE seq = 1""")
    code, out, err = verify_audit(capsys, tmp_path)
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "tampered" in line and "entry 1" in line


def test_verify_audit_detects_a_rehashed_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewriting an entry *and* its own hash still breaks the link to the next one."""
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    add_users(capsys, tmp_path)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        seq, at, actor, action, subject, prev = conn.execute(
            "SELECT seq, at, actor, action, subject, prev_hash FROM audit_log WHERE seq = 1"
        ).fetchone()
        data = '{"role":"admin"}'
        conn.execute(
            "UPDATE audit_log SET data = ?, hash = ? WHERE seq = 1",
            (data, _digest(prev, seq, at, actor, action, subject, data)),
        )
    code, _, err = verify_audit(capsys, tmp_path)
    assert code == 1
    line = one_error_line(err)
    assert "tampered" in line and "entry 2" in line


def test_verify_audit_detects_a_deleted_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    add_users(capsys, tmp_path)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_log WHERE seq = 2")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) - 1 FROM audit_log)")
    code, out, err = verify_audit(capsys, tmp_path)
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "tampered" in line and "entry 2" in line


def test_verify_audit_of_a_database_that_does_not_exist_creates_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A mistyped --db made an empty database and printed OK (exit 0)."""
    code, out, err = verify_audit(capsys, tmp_path)
    assert code == 1 and out == ""
    assert "does not exist: nothing was verified" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


GUARD = (
    "CREATE TRIGGER {name} BEFORE {event} ON audit_log"
    " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
)


def test_verify_audit_with_an_earlier_head_catches_a_cut_tail_and_a_rewrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain alone cannot show that its newest entries were cut off, or that every entry
    was re-hashed (written without the server secret, and the guards remade after); the head
    an earlier run printed can."""
    monkeypatch.setenv("RESPONDER_PASSWORD", "correct horse battery")
    add_users(capsys, tmp_path)
    code, out, _ = verify_audit(capsys, tmp_path)
    expect = out.split("--expect ")[1].strip()
    assert code == 0 and expect.startswith("3:") and len(expect) == 2 + 64
    code, _, _ = run(capsys, "user", "add", "wang", "--role", "viewer", *db_args(tmp_path))
    assert code == 0
    code, out, _ = run(
        capsys, "--lang", "en", "verify-audit", "--expect", expect, *db_args(tmp_path)
    )
    assert code == 0 and "4 entries" in out  # grown since: fine
    head4 = out.split("--expect ")[1].strip()

    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:  # cut the newest two off
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE seq >= 3")
    code, _, err = verify_audit(capsys, tmp_path)
    assert code == 1 and "guard audit_log_no_delete was removed" in one_error_line(err)
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:  # a careful tamperer remakes it
        conn.execute(GUARD.format(name="audit_log_no_delete", event="DELETE"))
    code, out, _ = verify_audit(capsys, tmp_path)
    assert code == 0  # without the recorded head, nothing shows
    head2 = out.split("--expect ")[1].strip()
    code, out, err = run(
        capsys, "--lang", "en", "verify-audit", "--expect", head4, *db_args(tmp_path)
    )
    assert code == 1 and out == ""
    assert "entries from 3 to 4 were removed" in one_error_line(err)

    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:  # rewrite entry 1, re-hash all
        conn.execute("DROP TRIGGER audit_log_no_update")
        rows = conn.execute(
            "SELECT seq, at, actor, action, subject, data FROM audit_log ORDER BY seq"
        ).fetchall()
        prev = "0" * 64
        for seq, at, actor, action, subject, data in rows:
            data = '{"role":"admin"}' if seq == 1 else data
            digest = _digest(prev, seq, at, actor, action, subject, data)
            conn.execute(
                "UPDATE audit_log SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (data, prev, digest, seq),
            )
            prev = digest
        conn.execute(GUARD.format(name="audit_log_no_update", event="UPDATE"))
    code, _, _ = verify_audit(capsys, tmp_path)
    assert code == 0  # a consistent rewrite passes the chain check alone
    code, _, err = run(
        capsys, "--lang", "en", "verify-audit", "--expect", head2, *db_args(tmp_path)
    )
    assert code == 1 and "entry 2 is not the one recorded earlier" in one_error_line(err)
    for bad in ("3", "x:abc", "0:" + "a" * 64, "3:short"):
        code, out, err = run(
            capsys, "--lang", "en", "verify-audit", "--expect", bad, *db_args(tmp_path)
        )
        assert code == 1 and out == "" and "N:HASH" in one_error_line(err)


@pytest.mark.parametrize("problem", ["a file where a directory should be", "not a database"])
def test_a_database_that_cannot_be_opened_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, problem: str
) -> None:
    """A wrong --db (or a volume this user may not write) tells the administrator which file
    and why, in one line, for any command, and creates nothing."""
    if problem == "not a database":
        db = tmp_path / "notes.txt"
        db.write_text("meeting notes, not a database " * 20, encoding="utf-8")
    else:
        (tmp_path / "afile").write_text("", encoding="utf-8")
        db = tmp_path / "afile" / "responder.sqlite3"
    before = sorted(tmp_path.iterdir())
    for args in (["user", "list"], ["verify-audit"]):
        code, _, err = run(capsys, *args, "--db", str(db))
        assert code == 1
        line = one_error_line(err)
        assert line.startswith(f"responder: 无法打开数据库 {db}:")
        assert "运行本服务的用户能否写入" in line
    code, _, err = run(capsys, "user", "list", "--db", str(db), "--lang", "en")
    assert one_error_line(err).startswith(f"responder: cannot open the database {db}: ")
    assert sorted(tmp_path.iterdir()) == before


def test_a_database_from_a_newer_version_is_refused_and_left_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An upgrade rolled back: the older responder used to list the newer database's users and
    serve it as if it were its own.  Now every command refuses in one line naming both schema
    versions, and the file is left byte for byte as the newer version wrote it."""
    code, _, _ = run(capsys, "user", "add", "chen", "--role", "viewer", "--no-password",
                     *db_args(tmp_path))  # fmt: skip
    assert code == 0
    db = tmp_path / "cli.sqlite3"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        known = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("PRAGMA user_version = 999")
    before = db.read_bytes()
    code, out, err = run(capsys, "user", "list", *db_args(tmp_path))
    assert code == 1 and out == ""
    assert one_error_line(err) == (
        f"responder: 数据库 {db} 由更新版本的 responder 写入(其结构版本为 999,本版本只认识到"
        f" {known}),本版本不得修改它。请使用写入它的新版本 responder"
    )
    code, _, err = run(capsys, "user", "list", *db_args(tmp_path), "--lang", "en")
    assert code == 1
    assert f"newer responder (its schema version 999, this one knows up to {known})" in (
        one_error_line(err)
    )
    env = {**os.environ, "RESPONDER_SECRET": "a secret only for this test 8c1e"}
    served = subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", CONFIG, "serve", "--port",
         str(free_port()), *db_args(tmp_path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert served.returncode == 1 and "Traceback" not in served.stderr, served.stderr
    assert served.stderr.splitlines()[-1].startswith(f"responder: 数据库 {db} 由更新版本")
    assert db.read_bytes() == before


def test_a_channel_apprise_does_not_understand_fails_check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A typo in a channel's scheme passed check-config and surfaced only when the first alert
    failed over.  It is named now, with the people it would reach — never the URL, which may
    hold a password."""
    path = write_config(
        tmp_path,
        """
[channels]
sms = "jsn://alerts:pa55word-secret@gateway.example/send?:to={phone}"
email = "mailto://alerts:pa55word-secret@smtp.example.gov.cn?to={email}"

[[units]]
id = "emergency"
name = "应急管理局"

[[people]]
id = "wang"
name = "王"
unit = "emergency"
roles = ["head"]
phone = "+8613800000001"
email = "wang@example.gov.cn"
channels = ["sms", "email"]

[[people]]
id = "li"
name = "李"
unit = "emergency"
roles = ["spokesperson"]
phone = "+8613800000002"
channels = ["sms"]
""",
    )
    code, line = check(capsys, path)
    assert code == 1
    assert line == (
        "responder: apprise 无法识别以下渠道的地址,请检查 [channels] 中的写法与联系人信息:"
        "渠道 sms(用于 wang、li)"
    )
    assert "pa55word" not in line


@pytest.mark.parametrize(
    ("service", "notes"),
    [
        ('public_url = "http://127.0.0.1:8080"', ["service.public_url 是本机地址"]),
        ('public_url = "http://localhost:8080"\ndev_inbox = true', ["开发收件箱已开启"]),
        ('public_url = "https://responder.example.gov.cn"', []),
    ],
)
def test_check_config_notes_settings_not_meant_for_production(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str, notes: list[str]
) -> None:
    """Valid, exit 0, but said: ack links that cannot open on a phone, the development inbox."""
    path = write_config(tmp_path, service + "\n" + GOOD_UNITS)
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("OK: ")
    # Without people, every audience of the rules reaches nobody: said too, checked apart.
    said = [line for line in err.splitlines() if "提醒" not in line]
    assert len(said) == len(notes)
    for line, note in zip(said, notes, strict=True):
        assert line.startswith(f"responder: 注意:{note}")


def test_check_config_notes_audiences_that_reach_nobody(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A step whose audience reaches nobody fires and tells no one: said before it matters.
    Valid (exit 0): a unit that never leads needs no spokesperson."""
    people = """
[[people]]
id = "wang"
name = "王"
unit = "emergency"
roles = ["head"]
phone = "+8613800000001"
channels = ["sms"]
"""
    path = write_config(tmp_path, 'public_url = "https://r.example.gov.cn"\n' + GOOD_UNITS + people)
    code = main(["--lang", "en", "check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("OK: ")
    assert err.splitlines() == [
        "responder: note: alerts.admins is empty: nobody is told when a message fails on"
        " every channel, when alerts fall behind, or when an API token is about to end",
        "responder: note: if one of these units leads an incident, the rules' alerts to"
        " these roles in it reach nobody (no such person in the config): emergency (no"
        " spokesperson); if they may lead, add those people under [[people]]",
        "responder: note: these audiences of the rules reach nobody in the config:"
        " duty_officer@#office, leader@#office, head@#publicity",
    ]


def test_check_config_notes_that_no_administrator_is_told(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    example = (ROOT / "config" / "responder.toml").read_text(encoding="utf-8")
    assert 'admins = ["admin-liu"]' in example
    (tmp_path / "rules").symlink_to(ROOT / "config" / "rules")
    path = tmp_path / "responder.toml"
    path.write_text(example.replace('admins = ["admin-liu"]', "admins = []"), encoding="utf-8")
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("OK: ")
    assert "responder: 注意:alerts.admins 为空:消息在所有渠道都发送失败" in err


def test_the_example_config_reaches_everyone_but_two_units_that_would_lead() -> None:
    from responder.checks import unreached

    [(zh, en)] = unreached(load_config(CONFIG))
    assert "gov-office(无 head、spokesperson)、publicity(无 spokesperson)" in zh
    assert "gov-office (no head, spokesperson), publicity (no spokesperson)" in en


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"responder {responder.__version__}\n"


def test_a_bad_port_or_log_format_is_named_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """$RESPONDER_PORT=abc used to break every command with a ValueError traceback, and a port
    over 65535 ended serve in an OverflowError.  Now only serve looks at them, and says so."""

    def serving(*_: object, **__: object) -> None:
        raise AssertionError("served although a setting was refused")

    monkeypatch.setattr("responder.web.server.run", serving)  # never hangs on a port
    monkeypatch.setenv("RESPONDER_PORT", "abc")
    code, out, _ = run(capsys, "check-config")
    assert code == 0 and out.startswith("OK: ")
    for env, flags, said in (
        ({"RESPONDER_PORT": "abc"}, [], "(--port 或 $RESPONDER_PORT),收到“abc”"),
        ({}, ["--port", "99999"], "端口须为 1—65535 的整数(--port 或 $RESPONDER_PORT),收到“99999”"),
        ({"RESPONDER_LOG_FORMAT": "xml"}, [], "日志格式须为 text 或 json,收到“xml”"),
    ):
        monkeypatch.delenv("RESPONDER_PORT", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as done:  # argparse: usage, the error, exit 2
            main(["--config", CONFIG, "serve", *flags])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
        monkeypatch.delenv("RESPONDER_LOG_FORMAT", raising=False)


def test_a_config_file_that_cannot_be_read_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory, a file saved in GBK, a file that is not TOML: one line each, no traceback."""
    gbk = tmp_path / "gbk.toml"
    gbk.write_bytes('[[units]]\nid = "emergency"\nname = "应急管理局"\n'.encode("gbk"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[service\n", encoding="utf-8")
    for path, said in (
        (tmp_path, "cannot be read: Is a directory"),
        (gbk, "not UTF-8 (saved as GBK?): save it as UTF-8"),
        (broken, "not valid TOML: "),
    ):
        code, line = check(capsys, path)
        assert code == 1
        assert line.startswith(f"responder: 配置错误:{path}: {said}")


def test_no_terminal_and_no_password_is_one_line(tmp_path: Path) -> None:
    """docker exec without -t, or a script: getpass meets end-of-file.  That used to be an
    EOFError traceback; now a line saying how to give the password, and no user is added."""
    env = {k: v for k, v in os.environ.items() if k != "RESPONDER_PASSWORD"}
    db = str(tmp_path / "r.sqlite3")
    for args in (["user", "add", "zhou", "--role", "viewer"], ["user", "password", "zhou"]):
        done = subprocess.run(
            [sys.executable, "-m", "responder.cli", "--config", CONFIG, *args, "--db", db],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "没有输入密码:请在终端中运行,或通过环境变量 RESPONDER_PASSWORD 提供" in done.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0


def test_rule_sets_that_leave_a_serious_emergency_without_deadlines_are_noted() -> None:
    from responder.checks import rule_gaps

    cfg = load_config(CONFIG)
    gbf, js = sorted(cfg.rule_sets, key=lambda r: r.id)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert rule_gaps(cfg.rule_sets, now) == []  # the example: covered from 2016 on
    # Before the first rule set: nothing in force.
    [(zh, en)] = rule_gaps(cfg.rule_sets, datetime(2015, 6, 1, tzinfo=UTC))
    assert zh.startswith("当前没有生效的规则集") and en.startswith("no rule set is in force now")
    # A month that no rule set covers.
    later = gbf.model_copy(update={"effective_from": datetime(2016, 12, 10, tzinfo=UTC)})
    [(zh, en)] = rule_gaps([js, later], now)
    assert "js-2016-local" in zh and "gbf-2016-80" in zh and "no rule is in force" in en
    # A rule set that sets no press conference for serious emergencies.
    no_pc = gbf.model_copy(
        update={"obligations": tuple(o for o in gbf.obligations if o.kind != "press_conference")}
    )
    notes = rule_gaps([js, no_pc], now)
    assert [en for _, en in notes] == [
        "rule set gbf-2016-80 sets no press_conference for level I incidents",
        "rule set gbf-2016-80 sets no press_conference for level II incidents",
    ]
    assert notes[0][0] == "规则集 gbf-2016-80 对 I 级事件没有设定:举行新闻发布会"


@pytest.mark.parametrize(
    ("where", "line", "says"),
    [
        ("rules", 'within = "5h"|within = 5', "write the unit with the number, e.g. '5h'"),
        ("rules", 'within = "5h"|within = "100000000h"', "within must be at most 366 days"),
        ("rules", 'repeat = "30m"|repeat = "10s"', "must be between 1m and 7d"),
        ("rules", 'offset = "-2h"|offset = "-9000h"', "must be between -366d and 366d"),
        ("config", 'retry_base = "10s"|retry_base = "0m"', "must be between 1s and 1h"),
        ("config", 'retry_base = "10s"|retry_base = "-5m"', "must be between 1s and 1h"),
        ("config", 'max_lag = "2m"|max_lag = "-5m"', "must be between 10s and 1d"),
        ("config", 'max_lag = "2m"|max_lag = 120', "write the unit with the number"),
        ("config", 'retry_max = "5m"|retry_max = "5s"', "retry_max must not be shorter"),
    ],
)
def test_durations_that_are_typos_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, line: str, says: str
) -> None:
    """check-config said OK to `within = 5` (taken as five seconds: every incident breached at
    once), to a limit that overflowed the planner, and to a negative max_lag (the health
    check failing for ever)."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    old, new = line.split("|")
    target = (
        tmp_path / "config" / "rules" / "gbf-2016-80.toml"
        if where == "rules"
        else tmp_path / "config" / "responder.toml"
    )
    text = target.read_text(encoding="utf-8")
    assert old in text
    target.write_text(text.replace(old, new, 1), encoding="utf-8")
    code, out, err = run(
        capsys, "check-config", "--config", str(tmp_path / "config" / "responder.toml")
    )
    assert code == 1 and out == ""
    assert says in one_error_line(err)


def test_braces_in_a_secret_from_the_environment_are_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password such as 'pa{ss}' broke the channel's template ('unmatched {')."""
    monkeypatch.setenv("SMS_PASS", "pa{ss}word")
    path = tmp_path / "responder.toml"
    text = Path(CONFIG).read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "json://${RESPONDER_DEV_INBOX", "json://gw:${SMS_PASS}@${RESPONDER_DEV_INBOX", 1
        ),
        encoding="utf-8",
    )
    shutil.copytree(ROOT / "config" / "rules", tmp_path / "rules")
    cfg = load_config(path)
    person = next(p for p in cfg.people if "sms" in p.channels)
    urls = [channel_url(t, person) for t in cfg.channels.values()]
    assert any("gw:pa{ss}word@" in u for u in urls), urls


def test_plan_for_a_time_no_rule_set_covers_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """It said "this level has no deadlines" for a level II incident in 2010: a wrong year
    read as a rule."""
    code, out, _ = run(
        capsys, "plan", "--level", "II", "--occurred-at", "2010-11-26T08:00:00+08:00",
        "--declared-at", "2010-11-26T09:00:00+08:00", "--config", CONFIG,
    )  # fmt: skip
    assert code == 0
    assert "发生时间不在任何规则集的生效期内" in out and "该级别没有发布时限要求" not in out
    code, out, _ = run(
        capsys, "plan", "--level", "III", "--occurred-at", "2026-11-26T08:00:00+08:00",
        "--declared-at", "2026-11-26T09:00:00+08:00", "--config", CONFIG,
    )  # fmt: skip
    assert code == 0 and "该级别没有发布时限要求" in out


def test_a_note_when_the_example_inbox_is_on_another_port_than_the_service() -> None:
    """Following the README on another port, every example message failed without a word
    (the channels post to $RESPONDER_DEV_INBOX, by default 127.0.0.1:8080)."""
    from responder.checks import production_notes

    cfg = load_config(CONFIG)
    assert cfg.service.port == 8080
    assert not [zh for zh, _ in production_notes(cfg) if "RESPONDER_DEV_INBOX" in zh]
    cfg.service.port = 9090  # as `serve --port 9090` sets it
    [(zh, en)] = [(zh, en) for zh, en in production_notes(cfg) if "RESPONDER_DEV_INBOX" in zh]
    assert zh.startswith("渠道发往端口 8080 上的开发收件箱,但本服务使用端口 9090")
    assert en.endswith("set RESPONDER_DEV_INBOX=127.0.0.1:9090")


def test_a_password_piped_in_without_a_terminal_is_read_without_noise(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No terminal (a script, docker exec without -t): getpass printed an English warning
    that the password "may be echoed" before reading it — or before our own message."""
    import io

    from responder import cli

    monkeypatch.setattr(cli, "_terminal", lambda: False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "user", "add", "bob", "--role", "viewer", *db_args(tmp_path))
    assert code == 1 and "echoed" not in err
    assert one_error_line(err.splitlines()[-1]).startswith("responder: 没有输入密码")
    monkeypatch.setattr(sys, "stdin", io.StringIO("bob's long password\n"))
    code, _, err = run(capsys, "user", "add", "bob", "--role", "viewer", *db_args(tmp_path))
    assert code == 0 and err == "", err
    with sqlite3.connect(tmp_path / "cli.sqlite3") as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("scrypt$")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["user", "add", "x", "--role", "god"], "argument --role: invalid choice: 'god'"),
        (["token", "create", "chen", "--days", "abc"], "argument --days: invalid int value"),
    ],
)
def test_a_command_line_that_cannot_be_parsed_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """It was argparse's usage block, in English only, before the error."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("responder: 命令行有误:") and says in err
    assert "usage error" not in err and "(用法见 responder" in err


def test_a_username_that_differs_only_in_case_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """chen and CHEN were two look-alike accounts in every list and audit entry."""
    code, _, _ = run(capsys, "user", "add", "chen", "--role", "viewer", "--no-password",
                     *db_args(tmp_path))  # fmt: skip
    assert code == 0
    code, out, err = run(capsys, "user", "add", "CHEN", "--role", "admin", "--no-password",
                         *db_args(tmp_path))  # fmt: skip
    assert code == 1 and out == ""
    assert one_error_line(err) == "responder: 已有用户 chen,与 CHEN 只差大小写;请换一个用户名"
    code, out, _ = run(capsys, "user", "list", *db_args(tmp_path))
    assert [line.split("\t")[0] for line in out.splitlines()[1:]] == ["chen"]
