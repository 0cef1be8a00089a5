"""What the benchmarks share: paths, the stand-in, statistics, versions and the machine,
and the result files that bench/report.py turns into bench/RESULTS.md.

Each benchmark is a script `bench/<name>.py [--quick]` that writes `bench/results/<name>.json`
and prints its key ratio as its last line. Timings are only ever compared within one run
(ratios), because the machine is shared.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

REGIONS = ["ord", "syd", "cdg"]


def args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke run, not a figure)")
    return parser.parse_args()


def log(*words) -> None:
    print(*words, flush=True)


# --- statistics ---------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def r(value, digits: int = 2):
    return None if value is None else round(value, digits)


def ratio(a, b, digits: int = 2):
    return None if a is None or not b else round(a / b, digits)


# --- the machine and the versions --------------------------------------------------------------

def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def versions() -> dict[str, str]:
    from nats_fly.config.settings import DEFAULT_NATS_VERSION
    from nats_fly.processes import tools
    from nats_fly_testkit.engine import find_tool
    found = {
        "nats-server": _run([str(tools.nats_server(DEFAULT_NATS_VERSION)), "--version"]).split()[-1:],
        "pulumi CLI": _run([find_tool("pulumi") or "pulumi", "version"]),
        "pulumi SDK": metadata.version("pulumi"),
        "nats-py": metadata.version("nats-py"),
        "python": platform.python_version(),
    }
    found["nats-server"] = (found["nats-server"] or ["?"])[0]
    return found


def machine() -> dict[str, str]:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": str(os.cpu_count()), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "kernel": platform.release()}


def record(name: str, title: str, quick: bool, started: float, tables: list[dict], notes: list[str],
           key: str, data: dict, plots: list[str] = (), extra_versions: dict | None = None) -> Path:
    """Write bench/results/<name>.json. A table is {"title", "columns", "rows"}."""
    RESULTS.mkdir(exist_ok=True)
    doc = {"name": name, "title": title, "quick": quick,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "wall_s": round(time.monotonic() - started, 1),
           "versions": {**versions(), **(extra_versions or {})}, "machine": machine(),
           "tables": tables, "notes": list(notes), "plots": list(plots), "key": key, "data": data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def table(title: str, columns: list[str], rows: list[list]) -> dict:
    return {"title": title, "columns": columns, "rows": rows}


# --- the stand-in -------------------------------------------------------------------------------

@contextlib.contextmanager
def standin(check_interval_max: float | None = 1):
    """A Fly stand-in for one benchmark; everything it started is swept on the way out."""
    from nats_fly_testkit.standin.api import StandIn
    s = StandIn().start()
    if check_interval_max is not None:
        s.set_check_interval_max(check_interval_max)  # as the tests do: check-gated deploys in seconds
    try:
        yield s
    finally:
        s.close()


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark needs the Fly stand-in: run it as root (network namespaces)")
    for tool in ("busybox", "ip", "openssl"):
        if not shutil.which(tool) and not Path(f"/bin/{tool}").exists():
            sys.exit(f"{tool} is missing: apt-get install -y $(cat tests/kit/standin/REQUIREMENTS.txt)")


def save_plot(fig, ax, name: str) -> str:
    """Finish a plot the same way for every benchmark, write bench/<name>, and return its name."""
    import matplotlib.pyplot as plt
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / name, dpi=110)
    plt.close(fig)
    return name
