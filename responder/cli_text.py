"""The command line's one language per run: which one, and the words it needs in both.

The language is chosen before anything is read, so that even a command line that cannot be
parsed, or a config that cannot be loaded, is answered in it: ``--lang``, else
``$RESPONDER_LANG``, else the locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``: the first one set,
as POSIX reads them) when it names English or Chinese.  A locale that names neither (``C``,
``POSIX``, unset — a container, a service account) leaves it to the config's
``service.language``, and before the config is read to Chinese, the product's language.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from responder.config import Config
    from responder.store.audit import Verdict

LANGS = ("zh", "en")
DEFAULT = "zh"


def from_argv(argv: Sequence[str]) -> str | None:
    """``--lang X`` or ``--lang=X`` as written on the command line (argparse has not run yet:
    a usage error must already be in the chosen language).  The last one wins, as in argparse."""
    found = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        value = None
        if arg == "--lang" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--lang="):
            value = arg.partition("=")[2]
        if value in LANGS:
            found = value
    return found


def from_environment(environ: Mapping[str, str]) -> str | None:
    """``$RESPONDER_LANG``, else what the locale says of English or Chinese; None if nothing
    in the environment chooses."""
    chosen = environ.get("RESPONDER_LANG", "").strip().lower()
    if chosen in LANGS:
        return chosen
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        locale = environ.get(name, "")
        if locale:  # the first one set decides, even if it names neither language
            primary = locale.split("_")[0].split(".")[0].split("@")[0].lower()
            return primary if primary in LANGS else None
    return None


def pick(lang: str, zh: str, en: str) -> str:
    return en if lang == "en" else zh


# A log line of the library in both languages, "中文 … / English …", its arguments the Chinese
# half's and then the English half's: the command prints the half in its language.
_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrf]")


def log_line(record: logging.LogRecord, lang: str) -> str:
    """``record``'s message in ``lang`` when it is written as such a pair; else as it is."""
    fmt, args = record.msg, record.args
    if not isinstance(fmt, str) or not isinstance(args, tuple) or fmt.count(" / ") != 1:
        return record.getMessage()
    zh, en = fmt.split(" / ")
    n = len(_PLACEHOLDER.findall(zh))
    if n + len(_PLACEHOLDER.findall(en)) != len(args):
        return record.getMessage()
    try:
        return zh % args[:n] if lang == "zh" else en % args[n:]
    except (TypeError, ValueError):
        return record.getMessage()


# The lines of check-config, verify-audit and the tables, in both languages.


def config_summary(cfg: Config) -> tuple[str, str]:
    zh_ids = "、".join(f"{r.id}(自 {r.effective_from.date()} 起)" for r in cfg.rule_sets)
    en_ids = ", ".join(f"{r.id} (from {r.effective_from.date()})" for r in cfg.rule_sets)
    return (
        f"OK: {cfg.path}:{len(cfg.units)} 个单位,{len(cfg.people)} 人,"
        f"{len(cfg.channels)} 个渠道;规则集:{zh_ids}",
        f"OK: {cfg.path}: {len(cfg.units)} units, {len(cfg.people)} people, "
        f"{len(cfg.channels)} channels; rule sets: {en_ids}",
    )


def audit_intact(verdict: Verdict) -> tuple[str, str]:
    n, head = verdict.entries, verdict.head
    zh, en = f"OK: 审计日志完好,共 {n} 条", f"OK: audit log intact, {n} entries"
    if verdict.keyed_from is not None:
        zh += f"(自第 {verdict.keyed_from} 条起以服务器密钥签署)"
        en += f" (keyed with the server secret from #{verdict.keyed_from})"
    elif n:
        zh += "(均未以服务器密钥签署)"
        en += " (none keyed with the server secret)"
    if n:
        zh += f";最新条目 #{n} {head};下次校验:responder verify-audit --expect {n}:{head}"
        en += f"; head #{n} {head}; next time: responder verify-audit --expect {n}:{head}"
    return zh, en


USER_COLUMNS = {
    "zh": ["用户", "角色", "状态", "可登录", "令牌", "创建"],
    "en": ["user", "role", "state", "login", "tokens", "created"],
}
TOKEN_COLUMNS = {
    "zh": ["编号", "用户", "角色", "名称", "创建", "最近使用(精确到小时)", "吊销", "过期"],
    "en": ["id", "user", "role", "name", "created", "last used (to the hour)", "revoked",
           "expires"],
}  # fmt: skip
