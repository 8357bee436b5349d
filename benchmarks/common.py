"""Writing benchmark results: JSON with the machine described, and a markdown table."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhe_sklearn.cli import format_table

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_results(
    name: str,
    title: str,
    rows: list[dict],
    notes: str = "",
    extra: dict | None = None,
    output: Path = RESULTS,
    table: Callable[[list[dict]], str] = format_table,
) -> str:
    """Write ``<output>/<name>.json`` and ``<output>/<name>.md`` (default: ``results/``);
    returns the markdown table (``table(rows)``)."""
    output.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **(extra or {}), "rows": rows}
    (output / f"{name}.json").write_text(json.dumps(payload, indent=2))
    table = table(rows)
    (output / f"{name}.md").write_text(f"# {title}\n\nMachine: {machine()}\n\n{notes}\n\n{table}\n")
    return table


def markdown_table(rows: list[dict], float_format: str | None = None, missing: str = "") -> str:
    """Every key of the rows as a column, in first-seen order; floats in ``float_format``
    (e.g. ``".3f"``) if given, ``missing`` for None."""

    def cell(value: Any) -> str:
        if value is None:
            return missing
        return format(value, float_format) if float_format and isinstance(value, float) else str(value)

    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
