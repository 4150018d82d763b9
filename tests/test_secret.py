"""The server secret (:mod:`responder.secret`): made once, kept, and never used when it cannot
be trusted — an empty key would sign page sessions that anyone could forge."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.errors import ResponderError
from responder.secret import KEY_BYTES, load_secret
from tests.conftest import CONFIG_PATH

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESPONDER_SECRET", raising=False)


def test_made_at_the_first_start_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret.key"
    key = load_secret(str(path))
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(str(path)) == key


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "0 bytes, not 32"),  # a disk that filled up while it was written
        ("\n", "0 bytes, not 32"),
        (base64.b64encode(b"k" * 16).decode(), "16 bytes, not 32"),
        ("this is not base64 at all!", "Only base64 data is allowed"),
    ],
)
def test_a_key_file_that_cannot_be_trusted_is_refused(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "secret.key"
    path.write_text(content, encoding="ascii")
    with pytest.raises(ResponderError) as e:
        load_secret(str(path))
    assert e.value.code == "secret_unavailable"
    assert e.value.zh.startswith(f"服务器密钥文件 {path} 无法使用:") and "备份" in e.value.zh
    assert why in e.value.en
    assert path.read_text(encoding="ascii") == content  # left for the administrator


def test_killed_while_making_the_key_leaves_no_key_file_behind(tmp_path: Path) -> None:
    """A kill -9 in the first start, between creating the key file and writing it, left an
    empty key file that every later start refused.  The key is now written aside and linked
    into place whole.  (The kill is placed by making ``os.fdopen`` end the process.)"""
    path = tmp_path / "var" / "secret.key"
    script = (
        "import os, sys\n"
        "from responder import secret\n"
        "os.fdopen = lambda *a, **k: os._exit(9)\n"
        "secret.load_secret(sys.argv[1])\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, timeout=60
    )
    assert died.returncode == 9, died.stderr
    assert not path.exists()
    key = load_secret(str(path))  # the next start makes the key and keeps it
    assert len(key) == KEY_BYTES and load_secret(str(path)) == key


def test_two_first_starts_at_once_use_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process makes its key in the instant before ours is linked: ours is dropped and
    theirs used, so both sign with the same key.  (The other process is played by writing its
    key file just before the link.)"""
    path = tmp_path / "secret.key"
    theirs = b"t" * KEY_BYTES
    real_link = os.link

    def link(src: Any, dst: Any) -> None:
        Path(dst).write_text(base64.b64encode(theirs).decode() + "\n", encoding="ascii")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    assert load_secret(str(path)) == theirs
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary file left


def test_without_hard_links_the_key_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "secret.key"
    key = load_secret(str(path))
    assert len(key) == KEY_BYTES and load_secret(str(path)) == key
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_a_short_passphrase_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_SECRET", "short")
    with pytest.raises(ResponderError) as e:
        load_secret(str(tmp_path / "unused.key"))
    assert "RESPONDER_SECRET" in e.value.zh and "16" in e.value.zh
    monkeypatch.setenv("RESPONDER_SECRET", "a passphrase long enough")
    assert len(load_secret(str(tmp_path / "unused.key"))) == KEY_BYTES
    assert not (tmp_path / "unused.key").exists()


def test_serve_with_an_empty_key_file_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def serving(*_: object, **__: object) -> None:
        raise AssertionError("served with a key that cannot be trusted")

    monkeypatch.setattr("responder.web.server.run", serving)  # never hangs on a port
    monkeypatch.chdir(tmp_path)  # the example config keeps the key in var/secret.key
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_text("", encoding="ascii")
    code = main(["--config", str(CONFIG_PATH), "serve", "--db", str(tmp_path / "r.sqlite3")])
    err = capsys.readouterr().err
    assert code == 1
    assert (
        err.strip().splitlines()[-1].startswith("responder: 服务器密钥文件 var/secret.key 无法使用")
    )
