"""Where the templates are: beside the package in a checkout, else ./templates (the Docker
image's working directory), or wherever $RESPONDER_TEMPLATES says."""

from __future__ import annotations

import os
from pathlib import Path

from responder.errors import ResponderError

# What the service renders: if these are missing, so are the rest (a wrong working directory).
REQUIRED = ("pages/base.html", "pages/error.html", "messages/sms.zh.j2", "messages/email.zh.j2")


def templates_dir() -> Path:
    if os.environ.get("RESPONDER_TEMPLATES"):
        return Path(os.environ["RESPONDER_TEMPLATES"])
    beside = Path(__file__).resolve().parents[1] / "templates"
    return beside if beside.is_dir() else Path.cwd() / "templates"


def check_templates() -> Path:
    """The templates directory, or a refusal to start that says where it looked and what to do:
    without it every page answers 500 and no message can be built."""
    where = templates_dir()
    missing = [name for name in REQUIRED if not (where / name).is_file()]
    if missing:
        raise ResponderError(
            "templates_missing",
            f"找不到模板:{where} 中缺少 {'、'.join(missing)}。请在含 templates/ 的目录中启动"
            "(Docker 镜像中为 /app),或用环境变量 RESPONDER_TEMPLATES 指明模板目录",
            f"templates not found: {where} lacks {', '.join(missing)}; start from the directory"
            " that holds templates/ (/app in the Docker image), or set RESPONDER_TEMPLATES",
        )
    return where
