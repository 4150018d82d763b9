"""Configuration: one TOML file, ``${NAME}`` from the environment, validated with pydantic.

An error names the file, the key and what is wrong, so an administrator can fix it at once.
Secrets belong in the environment (``${SMTP_PASS}``), never in the file.
"""

from __future__ import annotations

import os
import re
import socket
import string
import tomllib
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from responder.errors import ConfigError
from responder.policy.rules import RuleSet
from responder.timeutil import config_duration, within_bounds, zone

DEFAULT_CONFIG = "config/responder.toml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ROLES = ("head", "spokesperson", "duty_officer", "leader", "publicity", "admin", "reviewer")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Service(_Strict):
    timezone: str = "Asia/Shanghai"
    public_url: str = "http://127.0.0.1:8080"
    database: str = "var/responder.sqlite3"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # This process's name among replicas, in /healthz and as the replica label of /metrics;
    # empty: the host's name and the port ("db1:8080").  Set RESPONDER_REPLICA in a container,
    # whose host name changes with each start.
    replica: str = ""

    def replica_name(self) -> str:
        return (
            self.replica
            or os.environ.get("RESPONDER_REPLICA")
            or (f"{socket.gethostname()}:{self.port}")
        )

    language: str = Field("zh", pattern="^(zh|en)$")
    rules: list[str] = Field(default_factory=lambda: ["rules/*.toml"])
    # A development inbox: the service itself receives json:// posts at /dev/inbox/{channel}
    # and shows them at /dev/inbox, so `make run` shows real messages without any accounts.
    dev_inbox: bool = False
    # Signs acknowledgement links and login sessions.  $RESPONDER_SECRET wins; otherwise this
    # file is created on first start (mode 0600).  Keep it out of backups of the database.
    secret_file: str = "var/secret.key"
    # Reverse proxies in front of the service (addresses or networks).  Requests from them are
    # taken to come from the client their X-Forwarded-For names, so that the login limit counts
    # each person's wrong passwords, not everyone's behind the proxy.  Empty: the header is
    # ignored.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # Connections open at once.  At the limit, the one waiting longest without having sent a
    # request is closed to make room (a flood of idle connections cannot shut people out), and
    # when every one is busy a new one is answered 503.  Kept below the process's limit on open
    # files (ulimit -n), which `serve` raises towards its hard limit when it can.
    max_connections: int = Field(1000, ge=8, le=100_000)
    # A connection must send its first request line and headers within this long, or it is
    # closed (a connection left half-open holds a file descriptor).
    header_timeout: timedelta = timedelta(seconds=20)

    @field_validator("header_timeout", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return config_duration(v)

    @field_validator("header_timeout")
    @classmethod
    def _header_timeout(cls, v: timedelta) -> timedelta:
        return within_bounds(v, timedelta(seconds=1), timedelta(minutes=10))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        zone(v)
        return v

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


# Beyond these a typo, not a choice: "0m" retries at once, "-5m" makes the health check fail
# for ever, "1000000h" never retries.
ALERT_BOUNDS = {
    "retry_base": (timedelta(seconds=1), timedelta(hours=1)),
    "retry_max": (timedelta(seconds=1), timedelta(days=1)),
    "max_lag": (timedelta(seconds=10), timedelta(days=1)),
    "send_timeout": (timedelta(seconds=1), timedelta(hours=1)),
    "failed_retry_max": (timedelta(seconds=10), timedelta(hours=1)),
}


class Alerts(_Strict):
    concurrency: int = Field(16, ge=1, le=256)
    attempts_per_channel: int = Field(3, ge=1, le=20)
    retry_base: timedelta = timedelta(seconds=10)
    retry_max: timedelta = timedelta(minutes=5)
    # The watchdog alerts the administrators when a step is this late, or a message failed
    # on every channel.
    max_lag: timedelta = timedelta(minutes=2)
    # A send that has not finished after this long (a gateway answering a byte at a time) is
    # given up on: the person's next channel is tried, never the same one again.
    send_timeout: timedelta = timedelta(seconds=60)
    # A message that failed on every channel is tried again, round after round over the
    # person's channels, while it matters (not acknowledged, its obligation pending, no later
    # alert delivered): the rounds start retry_base apart, doubling up to this.
    failed_retry_max: timedelta = timedelta(minutes=5)
    admins: list[str] = Field(default_factory=list)

    @field_validator(
        "retry_base", "retry_max", "max_lag", "send_timeout", "failed_retry_max", mode="before"
    )
    @classmethod
    def _d(cls, v: object) -> object:
        return config_duration(v)

    @field_validator(*ALERT_BOUNDS)
    @classmethod
    def _bounded(cls, v: timedelta, info: ValidationInfo) -> timedelta:
        return within_bounds(v, *ALERT_BOUNDS[str(info.field_name)])

    @model_validator(mode="after")
    def _retry_order(self) -> Alerts:
        if self.retry_max < self.retry_base:
            raise ValueError("retry_max must not be shorter than retry_base")
        return self


# The measures a reviewer may decide (the legal vocabulary; the ladder in the config only
# chooses among them).  "exempt" (免责) is a decision, never proposed by a rung.
MEASURES: dict[str, tuple[str, str]] = {
    "criticism": ("通报批评", "notified criticism"),
    "interview": ("约谈", "admonishment interview"),
    "correction": ("限期整改", "correction within a deadline"),
    "exempt": ("免责", "exempted"),
}


class Rung(_Strict):
    """One rung of the accountability ladder: the measure proposed when any of its conditions
    holds (a rung without conditions always holds: the last one, for a first breach)."""

    measure: str
    # The same unit breached (on another incident, not exempted) in this many months before.
    repeat_within_months: int | None = Field(None, ge=1, le=120)
    # This breach overran its deadline by more than this.
    overrun_over: timedelta | None = None
    # The measure comes with a correction (限期整改) due this long after the decision.
    correction_within: timedelta | None = None

    @field_validator("measure")
    @classmethod
    def _measure(cls, v: str) -> str:
        if v not in MEASURES or v == "exempt":
            known = ", ".join(m for m in MEASURES if m != "exempt")
            raise ValueError(f"unknown measure '{v}' (known: {known})")
        return v

    @field_validator("overrun_over", "correction_within", mode="before")
    @classmethod
    def _d(cls, v: object) -> object:
        return config_duration(v)

    @field_validator("overrun_over", "correction_within")
    @classmethod
    def _bounded(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else within_bounds(v, timedelta(minutes=1), timedelta(days=366))

    @property
    def conditional(self) -> bool:
        return self.repeat_within_months is not None or self.overrun_over is not None


def _default_ladder() -> list[Rung]:
    return [
        Rung(
            measure="interview",
            repeat_within_months=12,
            overrun_over=timedelta(hours=4),
            correction_within=timedelta(days=30),
        ),
        Rung(measure="criticism"),
    ]


class Accountability(_Strict):
    """The review of breaches: the ladder of proposed measures (first rung that holds wins)
    and the reminders of a correction deadline to the unit's head."""

    ladder: list[Rung] = Field(default_factory=_default_ladder, min_length=1)
    # Before a correction deadline, the unit's head is reminded at these offsets (negative),
    # then at the deadline, and again every `correction_overdue_every` while it is overdue.
    correction_reminders: list[timedelta] = Field(
        default_factory=lambda: [-timedelta(days=7), -timedelta(days=1)]
    )
    correction_overdue_every: timedelta = timedelta(days=1)
    # A correction a reviewer asks for without saying by when: due this long after.
    correction_within: timedelta = timedelta(days=30)

    @field_validator("correction_reminders", mode="before")
    @classmethod
    def _ds(cls, v: object) -> object:
        return [config_duration(x) for x in v] if isinstance(v, list) else v

    @field_validator("correction_reminders")
    @classmethod
    def _before(cls, v: list[timedelta]) -> list[timedelta]:
        for d in v:
            within_bounds(d, -timedelta(days=366), -timedelta(minutes=1))
        return v

    @field_validator("correction_overdue_every", "correction_within", mode="before")
    @classmethod
    def _d(cls, v: object) -> object:
        return config_duration(v)

    @field_validator("correction_overdue_every")
    @classmethod
    def _every(cls, v: timedelta) -> timedelta:
        return within_bounds(v, timedelta(hours=1), timedelta(days=7))

    @field_validator("correction_within")
    @classmethod
    def _within(cls, v: timedelta) -> timedelta:
        return within_bounds(v, timedelta(hours=1), timedelta(days=366))

    @model_validator(mode="after")
    def _ends_unconditional(self) -> Accountability:
        *upper, last = self.ladder
        if last.conditional:
            raise ValueError("ladder: the last rung must have no condition (a first breach)")
        if any(not r.conditional for r in upper):
            raise ValueError("ladder: only the last rung may be without a condition")
        return self


class Unit(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    name_en: str = ""
    tags: list[str] = Field(default_factory=list)


class Person(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    unit: str
    roles: list[str]
    phone: str | None = None
    email: str | None = None
    contacts: dict[str, str] = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)
    language: str = Field("zh", pattern="^(zh|en)$")

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for r in v:
            if r not in ROLES:
                raise ValueError(f"unknown role '{r}' (known: {', '.join(ROLES)})")
        return v

    def fields(self) -> dict[str, str]:
        """What a channel template may use: {phone}, {email}, {id}, and every contact."""
        out = {"id": self.id, **self.contacts}
        if self.phone:
            out["phone"] = self.phone
        if self.email:
            out["email"] = self.email
        return out


class Config(_Strict):
    service: Service = Field(default_factory=Service)
    alerts: Alerts = Field(default_factory=Alerts)
    accountability: Accountability = Field(default_factory=Accountability)
    channels: dict[str, str] = Field(default_factory=dict)
    units: list[Unit] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    # Filled in by load(): the rule sets named by service.rules, and where the file was.
    rule_sets: list[RuleSet] = Field(default_factory=list, exclude=True)
    path: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _references(self) -> Config:
        units = {u.id for u in self.units}
        if len(units) != len(self.units):
            raise ValueError(f"units: two units share the id '{_twice(u.id for u in self.units)}'")
        ids = [p.id for p in self.people]
        if len(ids) != len(set(ids)):
            raise ValueError(f"people: two people share the id '{_twice(ids)}'")
        for i, p in enumerate(self.people):
            if p.unit not in units:
                raise ValueError(f"people[{i}] ({p.id}): unknown unit '{p.unit}'")
            for ch in p.channels:
                if ch not in self.channels:
                    raise ValueError(f"people[{i}] ({p.id}): unknown channel '{ch}'")
                missing = template_fields(self.channels[ch]) - set(p.fields())
                if missing:
                    raise ValueError(
                        f"people[{i}] ({p.id}): channel '{ch}' needs " + ", ".join(sorted(missing))
                    )
        for admin in self.alerts.admins:
            if admin not in ids:
                raise ValueError(f"alerts.admins: unknown person '{admin}'")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.service.timezone)

    def unit(self, unit_id: str) -> Unit | None:
        return next((u for u in self.units if u.id == unit_id), None)

    def person(self, person_id: str) -> Person | None:
        return next((p for p in self.people if p.id == person_id), None)


def _twice(ids: Iterable[str]) -> str:
    """The first id given twice (so an error can name it)."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return ""


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _substitute(value: Any, where: str, path: str) -> Any:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) in every string, recursively."""
    if isinstance(value, str):
        # A channel's URL is a template filled from each person's contacts ({phone}): braces
        # in a password taken from the environment are part of the password, not fields.
        literal = (
            (lambda s: s.replace("{", "{{").replace("}", "}}"))
            if where.startswith("channels.")
            else (lambda s: s)
        )

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return literal(os.environ[name])
            if default is not None:
                return default
            raise ConfigError(path, where, f"environment variable {name} is not set")

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, f"{where}.{k}" if where else k, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return value


def _first_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return key, msg


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except UnicodeDecodeError:  # an editor that saved the Chinese names in GBK
        raise ConfigError(str(path), "", "not UTF-8 (saved as GBK?): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"not valid TOML: {e}") from None
    except OSError as e:  # a directory, no permission to read
        raise ConfigError(str(path), "", f"cannot be read: {e.strerror or e}") from None


def load_rule_set(path: Path) -> RuleSet:
    try:
        return RuleSet.model_validate(read_toml(path))
    except ValidationError as e:
        key, msg = _first_error(e)
        raise ConfigError(str(path), key, msg) from None


def load(path: str | Path = DEFAULT_CONFIG) -> Config:
    path = Path(path)
    raw = _substitute(read_toml(path), "", str(path))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        key, msg = _first_error(e)
        raise ConfigError(str(path), key, msg) from None
    cfg.path = str(path)
    base = path.parent
    files: list[Path] = []
    for pattern in cfg.service.rules:
        matched = (
            sorted(base.glob(pattern)) if any(c in pattern for c in "*?[") else [base / pattern]
        )
        if not matched:
            raise ConfigError(str(path), "service.rules", f"no rule set matches '{pattern}'")
        files.extend(matched)
    cfg.rule_sets = [load_rule_set(f) for f in files]
    ids = [r.id for r in cfg.rule_sets]
    if len(ids) != len(set(ids)):
        raise ConfigError(str(path), "service.rules", f"two rule sets share the id '{_twice(ids)}'")
    return cfg
