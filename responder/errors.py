"""Errors a person can read: a stable code, Chinese first, English available."""

from __future__ import annotations

from typing import Any


class ResponderError(Exception):
    """Base for every refusal.  ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, code: str, zh: str, en: str, detail: Any = None) -> None:
        super().__init__(zh)
        self.code = code
        self.zh = zh
        self.en = en
        self.detail = detail

    def message(self, lang: str = "zh") -> str:
        return self.en if lang == "en" else self.zh

    def __str__(self) -> str:
        return f"{self.zh} / {self.en}"


class BadInput(ResponderError):
    status = 422


class NotFound(ResponderError):
    status = 404


class Conflict(ResponderError):
    """The request is well formed but the incident's state forbids it (e.g. it is closed)."""

    status = 409


class ConfigError(Exception):
    """A configuration problem: names the file, the key and what is wrong."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem
