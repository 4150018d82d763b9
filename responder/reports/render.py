"""Making a report: build it, check the audit chain and the earlier seals, seal what it shows
into a new audit entry, and render it as HTML (printable, A4), CSV or JSON.

Every report states whether the audit chain verified when it was made, and its head
``N:HASH`` — the report's own entry — so a printed notice can be checked years later with
``responder verify-audit --expect N:HASH``: the chain still has that entry, and no evidence
row the report sealed was changed since.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape

from responder.ops import Ops
from responder.paths import templates_dir
from responder.reports import incident, quarterly, seal
from responder.store.audit import verify

Format = Literal["html", "csv", "json"]
MEDIA = {"html": "text/html", "csv": "text/csv", "json": "application/json"}
STYLESHEET = Path(__file__).resolve().parents[1] / "web" / "static" / "report.css"
_ENV = Environment(
    loader=FileSystemLoader(str(templates_dir() / "reports")),
    autoescape=select_autoescape(default=True),
)


async def stamp(
    ops: Ops, subject: str, rows: dict[str, list[Any]], facts: dict[str, Any], actor: str
) -> dict[str, Any]:
    """The audit statement of a report: the chain and every earlier seal checked; if both
    hold, the rows this report shows sealed into its own entry, whose ``N:HASH`` it prints."""
    verdict = await verify(ops.db.reader, secret=ops.db.server_secret)
    problems = [] if not verdict.ok else await seal.check(ops.db.reader)
    if not verdict.ok or problems:
        return {
            "verified": False,
            "problem": verdict.problem or problems[0],
            "problems": problems[:50],
            "head": None,
            "check": "responder verify-audit",
        }
    seq, digest = await ops.seal_report(subject, seal.seal(rows), facts, actor)
    return {
        "verified": True,
        "problem": "",
        "problems": [],
        "head": f"{seq}:{digest}",
        "check": f"responder verify-audit --expect {seq}:{digest}",
    }


async def incident_report(ops: Ops, incident_id: str, actor: str) -> dict[str, Any]:
    report, rows = await incident.build(ops.db, ops.cfg, incident_id, ops.clock.now())
    report["audit"] = await stamp(
        ops, incident_id, rows, {"report": "incident", "incident": incident_id}, actor
    )
    return report


async def quarterly_report(ops: Ops, year: int, quarter: int, actor: str) -> dict[str, Any]:
    report, rows = await quarterly.build(ops.db, ops.cfg, year, quarter, ops.clock.now())
    facts = {"report": "quarterly", "year": year, "quarter": quarter}
    report["audit"] = await stamp(ops, f"quarterly:{year}Q{quarter}", rows, facts, actor)
    return report


def render(report: dict[str, Any], fmt: Format, standalone: bool = True) -> str:
    """The report as text in ``fmt``.  ``standalone`` HTML carries its stylesheet (a file to
    keep or print); served by the app it links /static/report.css (the pages' CSP)."""
    if fmt == "json":
        return json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return _csv(report)
    css = STYLESHEET.read_text(encoding="utf-8") if standalone else ""
    return _ENV.get_template(f"{report['report']}.html").render(r=report, css=css)


def _csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    audit = report["audit"]
    # The first line says what the rows are and how to check them (pandas: comment="#").
    state = (
        f"verified, head {audit['head']}"
        if audit["verified"]
        else f"NOT verified: {audit['problem']}"
    )
    out.write(f"# {report['report']} report made {report['made_at']}: audit chain {state}\r\n")
    if report["report"] == "incident":
        w.writerow(incident.TIMELINE_COLUMNS)
        for e in report["timeline"]:
            w.writerow([e[c] if e[c] is not None else "" for c in incident.TIMELINE_COLUMNS])
    else:
        w.writerow(quarterly.CSV_COLUMNS)
        w.writerows(quarterly.csv_rows(report))
    return out.getvalue()


def filename(report: dict[str, Any], fmt: Format) -> str:
    if report["report"] == "incident":
        return f"report-{report['incident']['id']}.{fmt}"
    return f"quarterly-{report['year']}Q{report['quarter']}.{fmt}"
