"""The Docker image's install: ``pip install .`` from exactly what the Dockerfile copies.

Every other test runs from the checkout (an editable install), where files beside the modules
are simply there.  The image installs the built package, so a file the wheel leaves out — a
migration, the pages' stylesheet — passes the whole suite and breaks the image at startup
(it did: ``responder/web/static`` was missing and ``serve`` stopped with a ValueError).  So the
wheel is built here from a copy made as the Dockerfile makes it, installed into a directory of
its own, and run as the image runs it: the pages and their stylesheet answer, a declaration
is made and its first alert is sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from responder import __version__
from tests.sinks import free_port

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 120.0  # seconds: only a hung build or service takes this long


def _docker_copies() -> list[str]:
    """The sources of the Dockerfile's COPY lines (``COPY a b ./`` → a, b)."""
    out: list[str] = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            out += [w for w in words[1:-1] if not w.startswith("--")]
    return out


def _copy_as_docker_does(dest: Path) -> None:
    for name in _docker_copies():
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=LIMIT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/app`` as the image has it: the copied files, with the package installed (not
    editable) into ``site/`` by the wheel built from them."""
    app = tmp_path_factory.mktemp("app")
    _copy_as_docker_does(app)
    # No build isolation: the test extras bring setuptools, so nothing is downloaded.
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(app / "dist"), ".", cwd=app)  # fmt: skip
    [wheel] = (app / "dist").glob("*.whl")
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(app / "site"), str(wheel), cwd=app)  # fmt: skip
    return app


def test_every_file_beside_the_modules_is_in_the_wheel(image: Path) -> None:
    [wheel] = (image / "dist").glob("*.whl")
    assert wheel.name.startswith(f"responder_deadlines-{__version__}-")  # one version, everywhere
    with zipfile.ZipFile(wheel) as z:
        packed = set(z.namelist())
    source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "responder").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert source - packed == set()


def test_the_installed_package_serves_declares_and_sends(image: Path) -> None:
    """The README's first steps in the image's layout: a user and a token by the installed
    command, the service by the image's command, its pages and stylesheet, a declaration by
    the API, and an alert sent by the sending process (a child started from the installed
    package) to the development inbox."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(image / "site"),  # the installed copy, before the checkout's
        "RESPONDER_DB": str(image / "var" / "responder.sqlite3"),
        "RESPONDER_SECRET": "packaging-test-secret-0123456789",
        "RESPONDER_PUBLIC_URL": base,
        "RESPONDER_DEV_INBOX": f"127.0.0.1:{port}",
    }
    env.pop("RESPONDER_CONFIG", None)
    # The installed console script (the Dockerfile's CMD runs it), from the image's working
    # directory.  Unlike ``python -m`` it does not import the copied sources found there.
    script = str(image / "site" / "bin" / "responder")
    config = ("--config", "config/responder.toml")
    _run(script, *config, "user", "add", "chen", "--role", "duty_officer", "--no-password",
         cwd=image, env=env)  # fmt: skip
    token = _run(script, *config, "token", "create", "chen", cwd=image, env=env).strip()

    proc = subprocess.Popen(
        [script, *config, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=image, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    hang = threading.Timer(LIMIT, proc.kill)  # only a hung service is stopped this way
    hang.start()
    try:
        assert proc.stderr is not None
        said: list[str] = []

        def wait_said(text: str) -> None:
            """Read the log as it comes until ``text``, or until the service has died."""
            for line in proc.stderr:  # type: ignore[union-attr]
                said.append(line)
                if text in line:
                    return
            raise AssertionError(f"never logged {text!r}:\n" + "".join(said))

        wait_said(f"responder {__version__} serving on http://")
        with urllib.request.urlopen(f"{base}/static/style.css", timeout=LIMIT) as r:
            assert r.status == 200 and r.read()
        with urllib.request.urlopen(f"{base}/login", timeout=LIMIT) as r:
            page = r.read().decode()
        assert r.status == 200 and "/static/style.css" in page and "<form" in page

        body = {
            "title": "化工园区储罐爆炸",
            "category": "accident",
            "level": "II",
            "occurred_at": datetime.now(UTC).isoformat(),
            "lead_unit": "emergency",
        }
        req = urllib.request.Request(
            f"{base}/api/v1/incidents",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=LIMIT) as r:
            declared = json.loads(r.read())
        assert r.status == 201 and declared["obligations"]
        wait_said("sent notification 1 ")  # through apprise in the sending process

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(LIMIT) == 0
    finally:
        hang.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_started_away_from_its_templates_it_says_so(image: Path, tmp_path: Path) -> None:
    """Installed, the templates are found in the working directory (the image's /app): started
    anywhere else, serve and check-config stop with one line instead of answering every page
    with 500 and building no message."""
    env = {**os.environ, "PYTHONPATH": str(image / "site"), "RESPONDER_SECRET": "x" * 20,
           "RESPONDER_DB": str(tmp_path / "r.sqlite3")}  # fmt: skip
    env.pop("RESPONDER_TEMPLATES", None)
    script = str(image / "site" / "bin" / "responder")
    config = str(image / "config" / "responder.toml")
    for command in (["check-config"], ["serve", "--port", str(free_port())]):
        done = subprocess.run([script, "--config", config, *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=LIMIT)  # fmt: skip
        assert done.returncode == 1, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(
            f"responder: 找不到模板:{tmp_path / 'templates'} 中缺少 pages/base.html"
        )
        assert "RESPONDER_TEMPLATES" in line
    assert not (tmp_path / "r.sqlite3").exists()


def test_the_image_installs_exact_versions_that_satisfy_the_project() -> None:
    """requirements.lock pins every dependency the package declares, each to one version
    that its range in pyproject.toml admits: two builds of one commit install the same program."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not pinned to one version: {line}"
            pinned[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        req = Requirement(dependency)
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(version), f"{req.name}=={version} is outside {req.specifier}"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "-r requirements.lock" in dockerfile and "--no-deps ." in dockerfile


def test_the_image_takes_its_port_from_the_environment_and_keeps_the_secret_apart() -> None:
    """The command fixes neither host nor port ($RESPONDER_HOST / $RESPONDER_PORT, which the
    health check follows), and the secret has a volume of its own, out of the database's."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert "--port" not in cmd and "--host" not in cmd
    health = dockerfile[dockerfile.index("HEALTHCHECK") :]
    assert "RESPONDER_PORT" in health.split("CMD", 1)[1].splitlines()[0]
    assert "RESPONDER_SECRET_FILE=/app/secret/" in dockerfile
    assert '"/app/var", "/app/secret"' in dockerfile
