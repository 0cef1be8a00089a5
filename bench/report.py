"""bench/RESULTS.md from bench/results/*.json: a section per benchmark, each with its date,
versions and machine, its tables, notes and plots. Run by bench/run after the benchmarks."""
from __future__ import annotations

import json

import common

ORDER = ["convergence", "operations", "parallel", "program_cost", "latency", "throughput", "rolls", "edge_reads", "assets"]


def cell(value) -> str:
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def section(doc: dict) -> list[str]:
    v, m = doc["versions"], doc["machine"]
    out = [f"## {doc['title']}", "",
           f"{doc['date']}{' (quick run: fewer runs, not a figure)' if doc['quick'] else ''}; took {doc['wall_s']} s. "
           + ", ".join(f"{k} {val}" for k, val in v.items()) + f". Machine: nproc {m['nproc']}, memory {m['memory']}, "
           f"kernel {m['kernel']}.", "", f"**Key:** `{doc['key']}`", ""]
    for t in doc["tables"]:
        out += [f"**{t['title']}**", "", "| " + " | ".join(cell(c) for c in t["columns"]) + " |",
                "|" + "---|" * len(t["columns"])]
        out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t["rows"]]
        out.append("")
    out += [f"- {n}" for n in doc["notes"]]
    out.append("")
    for plot in doc.get("plots", []):
        out += [f"![{doc['name']}]({plot})", ""]
    return out


def main() -> None:
    lines = ["# Benchmarks", "",
             "Made by `bench/run` (all) or `bench/run NAME` (one: " + ", ".join(ORDER) + "), as root for the Fly "
             "stand-in. Each benchmark writes `bench/results/NAME.json`; this file is rebuilt from those. The machine "
             "is shared (2 cores, other engineers' test runs beside these), so only ratios taken within one run are "
             "figures; absolute times are context.", ""]
    found = {p.stem: json.loads(p.read_text()) for p in sorted(common.RESULTS.glob("*.json"))}
    for name in ORDER + sorted(set(found) - set(ORDER)):
        if name in found:
            lines += section(found[name])
    (common.BENCH / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
