"""Where the templates are: beside the package in a checkout, else ./templates (the Docker
image's working directory), or wherever $RESPONDER_TEMPLATES says."""

from __future__ import annotations

import os
from pathlib import Path


def templates_dir() -> Path:
    if os.environ.get("RESPONDER_TEMPLATES"):
        return Path(os.environ["RESPONDER_TEMPLATES"])
    beside = Path(__file__).resolve().parents[1] / "templates"
    return beside if beside.is_dir() else Path.cwd() / "templates"
