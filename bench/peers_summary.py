"""Medians and spread of several ``bench/peers.py --json`` runs, as a Markdown table.

    python bench/peers_summary.py run1.json run2.json run3.json [--paths ssh_L,rmux]

Each figure is the median of the runs; each ratio is the median of the per-run
ratios (a ratio is only meaningful within one run), followed by its lowest and
highest value in brackets.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def load(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in paths]


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return ""
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def table(runs: list[dict[str, Any]], paths: list[str], ratio_columns: list[str]) -> str:
    figures: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for run in runs:
        for result in run["results"]:
            key = f"{result['workload']}/{result['figure']}"
            if key not in figures:
                figures[key] = {"unit": result["unit"], "values": {}, "ratios": {}}
                order.append(key)
            for path, value in result["values"].items():
                figures[key]["values"].setdefault(path, []).append(value)
        for key, ratios in run["ratios"].items():
            for column, value in ratios.items():
                figures[key]["ratios"].setdefault(column, []).append(value)
    head = ["figure", "unit", *paths, *ratio_columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "--:|" * (len(head) - 2)]
    for key in order:
        entry = figures[key]
        row = [key.split("/", 1)[1], entry["unit"]]
        row += [number(statistics.median(entry["values"][p])) if entry["values"].get(p) else ""
                for p in paths]  # fmt: skip
        row += [cell(entry["ratios"].get(column, [])) for column in ratio_columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--paths", default="socat2,ssh_L,rmux,rmux_tls,rmux_noplane")
    parser.add_argument("--ratios", default="rmux/ssh,rmux/socat2,tls/ssh,rmux/noplane")
    args = parser.parse_args()
    runs = load(args.runs)
    print(f"{len(runs)} runs; figures are medians; ratios: median (lowest-highest)\n")
    print(table(runs, args.paths.split(","), args.ratios.split(",")))


if __name__ == "__main__":
    main()
