"""Writing benchmark results: JSON with the machine described, and a markdown table."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from fhe_sklearn.cli import format_table

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_results(name: str, title: str, rows: list[dict], notes: str = "", extra: dict | None = None) -> str:
    """Write ``results/<name>.json`` and ``results/<name>.md``; returns the markdown table."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": machine(), **(extra or {}), "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    table = format_table(rows)
    (RESULTS / f"{name}.md").write_text(f"# {title}\n\nMachine: {machine()}\n\n{notes}\n\n{table}\n")
    return table
