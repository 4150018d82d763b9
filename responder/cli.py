"""The ``responder`` command.  Errors: one clear line on stderr, exit 1."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import aiosqlite

from responder import __version__, auth, cli_text, config
from responder.checks import (
    channels_not_understood,
    check_templates,
    describe_not_understood,
    production_notes,
)
from responder.clock import SystemClock
from responder.errors import BadInput, ConfigError, Conflict, ResponderError
from responder.reports import seal
from responder.secret import load_secret
from responder.store import Database, is_postgresql, open_store
from responder.store.audit import Verdict, verify
from responder.store.db import BUSY_TIMEOUT_MS, unavailable
from responder.timeutil import at_most_now, from_db, next_whole_second, parse_time, show
from responder.views import plan_text, preview

_t = cli_text.pick  # the run's half of a message in Chinese and English


def cli_actor() -> str:
    """Who ran a command, for the audit log: the operating-system account (the command line
    runs on the server, as someone who may write its database), and who used sudo to be it."""
    try:
        import pwd

        name = pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):  # not Unix, or a container's uid without a name
        name = getpass.getuser() if os.name == "nt" else f"uid {os.geteuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"cli:{name}" + (f" (sudo by {sudo})" if sudo and sudo != name else "")


class _Parser(argparse.ArgumentParser):
    """argparse, with a command line it cannot take said in one line (as every other error
    is), not a usage block: the way to the full usage is named instead.  argparse's own words
    (``invalid choice``…) and the ``--help`` texts are English."""

    lang = cli_text.DEFAULT  # the run's language, set on the class before parsing

    def error(self, message: str) -> NoReturn:
        self.exit(
            2,
            cli_text.pick(
                self.lang,
                f"responder: 命令行有误:{message}(用法见 {self.prog} --help)\n",
                f"responder: usage error: {message} (see {self.prog} --help)\n",
            ),
        )


def _parser(lang: str = cli_text.DEFAULT) -> argparse.ArgumentParser:
    _Parser.lang = lang
    # --config, --db and --lang work before or after the command.
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $RESPONDER_CONFIG or config/responder.toml)",
    )
    common.add_argument(
        "--db", default=argparse.SUPPRESS, help="database file (overrides the config)"
    )
    common.add_argument(
        "--lang",
        choices=list(cli_text.LANGS),
        default=argparse.SUPPRESS,
        help="the language of every message (default: $RESPONDER_LANG, else the locale's if"
        " English or Chinese, else service.language)",
    )
    p = _Parser(
        prog="responder",
        parents=[common],
        description="Keeps the publication deadlines of serious emergencies. 突发事件信息发布时限提醒。",
    )
    p.add_argument("--version", action="version", version=f"responder {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve", parents=[common], help="run the service: API, pages, scheduler, dispatcher"
    )
    s.add_argument("--host", default=os.environ.get("RESPONDER_HOST"), help="or $RESPONDER_HOST")
    # Defaults from the environment are strings: argparse checks them with ``type`` as it
    # checks the flags (a bad $RESPONDER_PORT is refused only when serving, and in words).
    s.add_argument(
        "--port",
        type=_port(lang),
        default=os.environ.get("RESPONDER_PORT"),
        help="or $RESPONDER_PORT",
    )
    s.add_argument(
        "--log-format",
        type=_log_format(lang),
        default=os.environ.get("RESPONDER_LOG_FORMAT", "text"),
        help="text or json (or $RESPONDER_LOG_FORMAT)",
    )

    sub.add_parser("check-config", parents=[common], help="validate the config and its rule sets")

    pl = sub.add_parser(
        "plan", parents=[common], help="show the deadlines and alert steps a declaration would set"
    )
    pl.add_argument("--level", required=True, choices=["I", "II", "III", "IV"])
    pl.add_argument(
        "--occurred-at", required=True, help="RFC 3339 with offset, e.g. 2026-11-26T08:00:00+08:00"
    )
    pl.add_argument("--declared-at", help="when it is declared (default: now)")
    pl.add_argument(
        "--lead-unit", help="the lead unit's id: each step then names the people it reaches"
    )
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    u = sub.add_parser("user", parents=[common], help="manage users").add_subparsers(
        dest="user_cmd", required=True
    )
    ua = u.add_parser(
        "add", parents=[common], help="add a user (password from $RESPONDER_PASSWORD or a prompt)"
    )
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=list(auth.ROLES))
    ua.add_argument("--no-password", action="store_true", help="API token only, no page login")
    u.add_parser("list", parents=[common], help="list users (role, disabled, active tokens)")
    ud = u.add_parser(
        "disable", parents=[common], help="disable a user: their tokens and logins stop at once"
    )
    ud.add_argument("username")
    ue = u.add_parser("enable", parents=[common], help="enable a disabled user again")
    ue.add_argument("username")
    up = u.add_parser(
        "password",
        parents=[common],
        help="set a user's page password ($RESPONDER_PASSWORD or a prompt); signs them out",
    )
    up.add_argument("username")

    t = sub.add_parser("token", parents=[common], help="manage API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    tc = t.add_parser("create", parents=[common], help="create an API token (printed once)")
    tc.add_argument("username")
    tc.add_argument("--name", default="cli")
    tc.add_argument(
        "--days",
        type=int,
        metavar="N",
        help=f"valid for N days (1 to {auth.MAX_TOKEN_DAYS}); default: until revoked",
    )
    tr = t.add_parser("revoke", parents=[common], help="revoke an API token by its id")
    tr.add_argument("token_id", type=_token_id(lang))
    tl = t.add_parser(
        "list", parents=[common], help="list API tokens: id, user, name, created, last used"
    )
    tl.add_argument("username", nargs="?", help="only this user's tokens")

    rp = sub.add_parser(
        "report",
        parents=[common],
        help="make a report (sealed in the audit log): incident, quarterly",
    ).add_subparsers(dest="report_cmd", required=True)
    ri = rp.add_parser("incident", parents=[common], help="the per-incident report")
    ri.add_argument("incident_id")
    rq = rp.add_parser("quarterly", parents=[common], help="the quarterly notice of every unit")
    rq.add_argument("--year", required=True, type=_year(lang))
    rq.add_argument("--quarter", required=True, type=int, choices=[1, 2, 3, 4])
    for r in (ri, rq):
        r.add_argument("--format", choices=["html", "csv", "json"], default="html")
        r.add_argument("--out", metavar="FILE", help="write it to FILE (default: standard output)")

    va = sub.add_parser("verify-audit", parents=[common], help="prove the audit log is intact")
    va.add_argument(
        "--expect",
        metavar="N:HASH",
        help="a head recorded from an earlier run: entry N must still have this hash",
    )
    return p


def _whole_number(high: int, zh: str, en: str) -> Callable[[str], Callable[[str], int]]:
    """An argparse type, given the run's language: a whole number from 1 to ``high``, else a
    usage error in words."""

    def in_language(lang: str) -> Callable[[str], int]:
        def parse(value: str) -> int:
            try:
                number = int(value)
            except ValueError:
                number = 0
            if not 0 < number <= high:
                raise argparse.ArgumentTypeError(
                    cli_text.pick(lang, f"{zh},收到“{value}”", f"{en}, not '{value}'")
                )
            return number

        return parse

    return in_language


_port = _whole_number(
    65535,
    "端口须为 1—65535 的整数(--port 或 $RESPONDER_PORT)",
    "the port must be a whole number from 1 to 65535 (--port or $RESPONDER_PORT)",
)
_year = _whole_number(2999, "年份须为 2000—2999 的整数", "the year must be from 2000 to 2999")
# A token's id as `token list` shows it (SQLite integers stop at 2**63 - 1).
_token_id = _whole_number(
    2**63 - 1, "令牌编号须为 token list 显示的数字", "a token id is the number token list shows"
)


def _log_format(lang: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in ("text", "json"):
            raise argparse.ArgumentTypeError(
                cli_text.pick(
                    lang,
                    f"日志格式须为 text 或 json,收到“{value}”(--log-format 或 $RESPONDER_LOG_FORMAT)",
                    f"the log format is text or json, not '{value}'"
                    " (--log-format or $RESPONDER_LOG_FORMAT)",
                )
            )
        return value

    return parse


def _fail(message: str) -> int:
    print(f"responder: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # One language for the whole run (see cli_text): chosen before parsing, so that a usage
    # error is in it too; the config's service.language only when nothing else chose.
    chosen = cli_text.from_argv(argv) or cli_text.from_environment(os.environ)
    lang = chosen or cli_text.DEFAULT
    args = _parser(lang).parse_args(argv)
    args.config = getattr(args, "config", None) or os.environ.get(
        "RESPONDER_CONFIG", config.DEFAULT_CONFIG
    )
    args.db = getattr(args, "db", None) or os.environ.get("RESPONDER_DB")
    chosen = getattr(args, "lang", None) or chosen  # argparse also takes --la en
    args.lang = lang = chosen or lang
    try:
        cfg = config.load(args.config)
        if args.db:
            cfg.service.database = args.db
        if chosen is None:
            args.lang = lang = cfg.service.language
        if args.command == "serve":
            return _serve(args, cfg)
        _cli_logging(lang)
        return asyncio.run(_run(args, cfg, lang))
    except ConfigError as e:
        return _fail(cli_text.pick(lang, f"配置错误:{e}", f"config error: {e}"))
    except ResponderError as e:
        return _fail(e.message(lang))
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, cfg: config.Config) -> int:
    from responder.web.server import serve

    if args.host:
        cfg.service.host = args.host
    if args.port:
        cfg.service.port = args.port
    return serve(cfg, log_format=args.log_format)


async def _run(args: argparse.Namespace, cfg: config.Config, lang: str) -> int:
    clock = SystemClock()
    if args.command == "check-config":
        check_templates()
        bad = channels_not_understood(cfg)
        if bad:
            raise ResponderError("channel_not_understood", *describe_not_understood(bad))
        for zh, en in production_notes(cfg):  # valid, but not what production wants
            _note(lang, _t(lang, zh, en))
        print(_t(lang, *cli_text.config_summary(cfg)))
        return 0
    if args.command == "plan":
        return _plan(args, cfg, lang, clock)
    if args.command == "verify-audit":
        return await _verify_audit(args, cfg, lang)
    async with open_store(cfg.service.database) as db:
        if "list" not in (getattr(args, "user_cmd", None), getattr(args, "token_cmd", None)):
            _key_audit(db, cfg)  # the command writes: its audit entry is keyed like the service's
        if args.command == "report":
            return await _report(args, db, cfg, clock)
        if args.command == "user":
            return await _user(args, db, cfg, clock)
        if args.command == "token":
            return await _token(args, db, cfg, clock)
    return _fail(_t(lang, f"未知命令 {args.command}", f"unknown command {args.command}"))


def _note(lang: str, text: str) -> None:
    """A line on stderr that does not stop the command."""
    print(_t(lang, f"responder: 注意:{text}", f"responder: note: {text}"), file=sys.stderr)


_HEAD = re.compile(r"([1-9][0-9]{0,18}):([0-9a-fA-F]{64})", re.ASCII)


def _existing_secret(cfg: config.Config) -> bytes | None:
    """The server secret, if the service has one: ``$RESPONDER_SECRET`` or the key file.  A
    command never makes the key file — run in another directory than the service, it would
    make a key of its own, and sign with that."""
    if os.environ.get("RESPONDER_SECRET") or os.path.exists(cfg.service.secret_file):
        return load_secret(cfg.service.secret_file)
    return None


def _missing(path: str) -> bool:
    """No such file in a directory that exists: a mistyped name.  (Anything else — a file
    where a directory should be, no permission — SQLite names when it tries.)"""
    return not os.path.exists(path) and os.path.isdir(os.path.dirname(path) or ".")


def _key_audit(db: Database, cfg: config.Config) -> None:
    secret = _existing_secret(cfg)
    if secret is not None:
        db.use_secret(secret)


async def _verify_audit(args: argparse.Namespace, cfg: config.Config, lang: str) -> int:
    """Prove the audit log intact: read-only (it never creates or changes a database), and a
    verdict in one line — exit 0 only when every entry was checked and fits."""
    expect = None
    if args.expect:
        head = _HEAD.fullmatch(args.expect)
        if head is None:
            return _fail(
                _t(
                    lang,
                    "--expect 应为“条目号:哈希”,即上次校验输出的内容",
                    "--expect takes N:HASH as an earlier run printed it",
                )
            )
        expect = (int(head[1]), head[2].lower())
    path = cfg.service.database
    if is_postgresql(path):
        verdict, changed = await _check_postgresql(path, expect, _existing_secret(cfg))
        return _verdict_answer(verdict, changed, cfg, lang)
    if _missing(path):
        return _fail(
            _t(
                lang,
                f"数据库 {path} 不存在,未作校验(请检查 --db、$RESPONDER_DB 或 service.database)",
                f"the database {path} does not exist: nothing was verified (check --db,"
                " $RESPONDER_DB or service.database)",
            )
        )
    secret = _existing_secret(cfg)
    conn = await _open_read_only(path)
    try:
        if not await conn.execute_fetchall("SELECT 1 FROM sqlite_master LIMIT 1"):
            return _fail(
                _t(
                    lang,
                    f"数据库 {path} 是空的,不是 responder 的数据库,未作校验(请检查路径)",
                    f"the database {path} is empty, not a responder database: nothing was"
                    " verified (check the path)",
                )
            )
        # One read snapshot for the tables, the mark and the chain: the service may be
        # writing (its first keyed entry marks audit_keyed in the same transaction).
        await conn.execute("BEGIN")
        verdict = await verify(conn, expect, secret)
        # The evidence decisions and reports rested on, sealed into their entries.
        changed = await seal.check(conn) if verdict.ok else []
    finally:
        await conn.close()
    return _verdict_answer(verdict, changed, cfg, lang)


async def _check_postgresql(
    url: str, expect: tuple[int, str] | None, secret: bytes | None
) -> tuple[Verdict, list[str]]:
    """The chain and the seals on PostgreSQL (connected only: nothing is migrated or
    written).  The chain is read in one statement, so replicas writing meanwhile do not
    tear it; entries they add after that statement are simply not checked this time."""
    from responder.store.pg import PgDatabase

    db = PgDatabase(url)
    await db.open(migrate=False)
    try:
        verdict = await verify(db.reader, expect, secret)
        return verdict, await seal.check(db.reader) if verdict.ok else []
    finally:
        await db.close()


def _verdict_answer(verdict: Verdict, changed: list[str], cfg: config.Config, lang: str) -> int:
    """Print the verdict in one line; exit 0 only for an intact log and evidence."""
    if not verdict.ok:
        return _fail(_verdict_line(verdict, cfg, lang))
    if changed:
        more = f" (+{len(changed) - 1})" if len(changed) > 1 else ""
        return _fail(
            _t(
                lang,
                f"证据记录已被篡改:{changed[0]}{more}",
                f"evidence tampered: {changed[0]}{more}",
            )
        )
    # Keep the head somewhere else (a log, a ticket) and pass it back with --expect: the
    # chain alone cannot show that its newest entries were cut off.  (The service sends one to
    # the administrators daily and at every close.)
    print(_t(lang, *cli_text.audit_intact(verdict)))
    return 0


def _verdict_line(verdict: Verdict, cfg: config.Config, lang: str) -> str:
    if not verdict.unauthenticated:
        return _t(
            lang,
            f"审计日志已被篡改或损坏:{verdict.problem_zh}",
            f"audit log tampered or damaged: {verdict.problem}",
        )
    # Exit 1 all the same: a script must not take "could not check" for "intact".
    where = cfg.service.secret_file
    return _t(
        lang,
        f"审计日志未能完整校验:{verdict.problem_zh}。密钥文件 {where} 不存在,也未设置"
        " RESPONDER_SECRET:请在服务所在目录以相同配置运行",
        f"audit log not fully verified: {verdict.problem}. The key file {where} does not exist"
        " and RESPONDER_SECRET is not set: run this where the service runs, with the same config",
    )


async def _open_read_only(path: str) -> aiosqlite.Connection:
    """The database, read-only: a mistyped path is never made into a new database, and
    nothing is written (SQLite may leave a WAL database's -wal/-shm beside it, as any reader)."""
    uri = f"file:{quote(path)}?mode=ro"
    # Tried first on a plain connection: aiosqlite, failing to open, leaves its thread to
    # report to an event loop that is gone by then.
    await asyncio.to_thread(_can_read, uri, path)
    conn = await aiosqlite.connect(uri, uri=True)
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _can_read(uri: str, path: str) -> None:
    """Open ``uri`` and read its schema, or raise :func:`unavailable` (no such file, not a
    database, no permission)."""
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise unavailable(path, e) from e


async def _user(
    args: argparse.Namespace, db: Database, cfg: config.Config, clock: SystemClock
) -> int:
    lang, name = args.lang, getattr(args, "username", "")
    if args.user_cmd == "list":
        rows = [
            [
                u["username"],
                u["role"],
                _t(lang, "停用", "disabled") if u["disabled"] else _t(lang, "启用", "enabled"),
                _t(lang, "是", "yes") if u["can_log_in"] else _t(lang, "否", "no"),
                str(u["tokens"]),
                show(from_db(u["created_at"]), cfg.tz),
            ]
            for u in await auth.users(db)
        ]
        _table(cli_text.USER_COLUMNS[lang], rows)
        return 0
    if args.user_cmd in ("disable", "enable"):
        disabled = args.user_cmd == "disable"
        await auth.set_disabled(db, name, disabled, clock.now(), cli_actor())
        if disabled:
            print(_t(lang, f"OK: 已停用用户 {name},其令牌和登录立即失效",
                     f"OK: user {name} disabled: its tokens and logins no longer work"))  # fmt: skip
        else:
            print(_t(lang, f"OK: 已启用用户 {name}", f"OK: user {name} enabled"))
        return 0
    if args.user_cmd == "password":
        await auth.set_password(db, name, _password(lang), clock.now(), cli_actor())
        print(_t(lang, f"OK: 已为 {name} 设置新密码,其已登录的页面会话已退出",
                 f"OK: password of {name} set; their page sessions were signed out"))  # fmt: skip
        return 0
    await _not_taken(db, name)  # before asking for a password that would be thrown away
    password = None if args.no_password else _password(lang)
    await auth.add_user(db, name, args.role, password, clock.now(), cli_actor())
    print(_t(lang, f"OK: 已添加用户 {name}({args.role})", f"OK: user {name} ({args.role}) added"))
    return 0


async def _not_taken(db: Database, username: str) -> None:
    """Refuse a name already in use (case aside, as ``auth.add_user`` does), saying how to give
    that user a password instead."""
    taken = next(
        (u["username"] for u in await auth.users(db) if u["username"].lower() == username.lower()),
        None,
    )
    if taken is not None and taken != username:
        raise Conflict(
            "user_exists",
            f"已有用户 {taken},与 {username} 只差大小写;请换一个用户名",
            f"user {taken} exists, which differs from {username} only in case; choose another name",
        )
    if taken is not None:
        raise Conflict(
            "user_exists",
            f"用户 {taken} 已存在;如需为其设置密码,请用 responder user password {taken}",
            f"user {taken} exists; to set its password: responder user password {taken}",
        )


async def _report(
    args: argparse.Namespace, db: Database, cfg: config.Config, clock: SystemClock
) -> int:
    from responder.ops import Ops
    from responder.reports import render

    ops = Ops(db, cfg, clock)
    if args.report_cmd == "incident":
        report = await render.incident_report(ops, args.incident_id, cli_actor())
    else:
        report = await render.quarterly_report(ops, args.year, args.quarter, cli_actor())
    text = render.render(report, args.format)
    if args.out:
        try:
            await asyncio.to_thread(Path(args.out).write_text, text, "utf-8", None, "")
        except OSError as e:
            why = e.strerror or e
            return _fail(
                _t(args.lang, f"无法写入 {args.out}:{why}", f"cannot write {args.out}: {why}")
            )
    else:
        sys.stdout.write(text)
    audit = report["audit"]
    if not audit["verified"]:
        problem = audit["problem"]
        return _fail(
            _t(args.lang, f"审计链校验未通过:{problem}", f"audit chain NOT verified: {problem}")
        )
    head = audit["head"]
    print(
        _t(
            args.lang, f"OK: 审计链已校验;最新条目 {head}", f"OK: audit chain verified; head {head}"
        ),
        file=sys.stderr,
    )
    return 0


def _terminal() -> bool:
    """Whether there is a terminal to ask for a password on (getpass asks on /dev/tty)."""
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False


class _Notes(logging.Handler):
    """The library's warnings (a database created where none was) on stderr, one line each,
    as the command's own notes are printed, in the run's language when written in both.
    sys.stderr is looked up when a line is written."""

    def __init__(self, lang: str) -> None:
        super().__init__(logging.WARNING)
        self.lang = lang

    def emit(self, record: logging.LogRecord) -> None:
        _note(self.lang, cli_text.log_line(record, self.lang))


def _cli_logging(lang: str) -> None:
    log = logging.getLogger("responder")
    for handler in [h for h in log.handlers if isinstance(h, _Notes)]:
        log.removeHandler(handler)  # main() run again in one process: this run's language
    log.addHandler(_Notes(lang))


def _password(lang: str) -> str:
    if os.environ.get("RESPONDER_PASSWORD"):
        return os.environ["RESPONDER_PASSWORD"]
    try:
        if _terminal():
            return getpass.getpass(_t(lang, "密码:", "Password: "))
        # No terminal (a script, docker exec without -t): one line from stdin.  getpass would
        # read it too, after printing an English warning that it "may be echoed".
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")
    except EOFError:  # no terminal and nothing on stdin (docker exec without -t, a script)
        raise BadInput(
            "no_password",
            "没有输入密码:请在终端中运行,或通过环境变量 RESPONDER_PASSWORD 提供"
            "(不需要页面登录的用户可用 --no-password)",
            "no password given: run it in a terminal or set RESPONDER_PASSWORD"
            " (--no-password for a user who needs no page login)",
        ) from None


async def _token(
    args: argparse.Namespace, db: Database, cfg: config.Config, clock: SystemClock
) -> int:
    lang = args.lang
    if args.token_cmd == "create":
        now = clock.now()
        expires_at = None
        if args.days is not None:
            if not 1 <= args.days <= auth.MAX_TOKEN_DAYS:
                raise BadInput(
                    "bad_token_days",
                    f"--days 须在 1 到 {auth.MAX_TOKEN_DAYS} 之间",
                    f"--days must be between 1 and {auth.MAX_TOKEN_DAYS}",
                )
            expires_at = now + timedelta(days=args.days)
        token, token_id = await auth.create_token(
            db, args.username, args.name, now, cli_actor(), expires_at
        )
        print(token)  # alone on stdout, for TOKEN=$(responder token create …)
        revoke = f"responder token revoke {token_id}"
        print(
            _t(
                lang,
                f"令牌编号 {token_id}(吊销:{revoke})",
                f"token id {token_id} (revoke: {revoke})",
            ),
            file=sys.stderr,
        )
        if expires_at is not None:
            until = show(expires_at, cfg.tz)
            print(
                _t(lang, f"有效期至 {until}(到期前用 token create 换新)",
                   f"valid until {until} (replace it with token create before then)"),
                file=sys.stderr,
            )  # fmt: skip
        return 0
    if args.token_cmd == "list":
        rows = [
            [
                str(t["id"]),
                t["username"] + (_t(lang, "(停用)", " (disabled)") if t["disabled"] else ""),
                t["role"],
                t["name"],
                show(from_db(t["created_at"]), cfg.tz),
                show(from_db(t["last_used_at"]), cfg.tz),
                show(from_db(t["revoked_at"]), cfg.tz) if t["revoked_at"] else "",
                _expiry(from_db(t["expires_at"]), clock.now(), cfg, lang),
            ]
            for t in await auth.tokens(db, args.username)
        ]
        _table(cli_text.TOKEN_COLUMNS[lang], rows)
        return 0
    await auth.revoke_token(db, args.token_id, clock.now(), cli_actor())
    print(_t(lang, f"OK: 已吊销令牌 {args.token_id}", f"OK: token {args.token_id} revoked"))
    return 0


def _expiry(expires_at: datetime | None, now: datetime, cfg: config.Config, lang: str) -> str:
    if expires_at is None:
        return ""
    return show(expires_at, cfg.tz) + (
        _t(lang, "(已过期)", " (expired)") if expires_at <= now else ""
    )


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Columns separated by tabs: readable in a terminal, and cut/awk-friendly."""
    for line in [header, *rows]:
        print("\t".join(line))


def _plan(args: argparse.Namespace, cfg: config.Config, lang: str, clock: SystemClock) -> int:
    occurred = parse_time(args.occurred_at, "--occurred-at")
    if args.declared_at:
        now = parse_time(args.declared_at, "--declared-at")
    else:  # as a declaration now would (see timeutil.CLOCK_SKEW)
        real = clock.now()
        now = next_whole_second(real)
        occurred = at_most_now(occurred, real)  # as a declaration now takes it (see the API)
    if occurred > now:
        return _fail(
            _t(
                lang,
                "--occurred-at 不能晚于申报时间",
                "--occurred-at cannot be after the declaration time",
            )
        )
    view = preview(cfg, args.level, occurred, now)
    if args.json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
    else:
        if args.lead_unit is not None and cfg.unit(args.lead_unit) is None:
            known = ", ".join(u.id for u in cfg.units)
            return _fail(
                _t(
                    lang,
                    f"--lead-unit:未知单位“{args.lead_unit}”(可选:{known})",
                    f"--lead-unit: unknown unit '{args.lead_unit}' (known: {known})",
                )
            )
        sys.stdout.write(plan_text(view, lang, cfg, args.lead_unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
