"""Benchmark 3, parallel provisioning: the wall time of a first `pulumi up` against the sum of
the durations of the flyctl calls it made, with the stand-in's artificial latency on every call
(a realistic round trip to Fly's API and its Machines). The regions are independent, so the
engine should run their `scale count` calls at the same time.
"""
from __future__ import annotations

import time

import common
from common import log
from enginestack import Stack

LATENCY_MS = 2000
REGION_SETS = {3: ["ord", "syd", "cdg"], 6: ["ord", "syd", "cdg", "lhr", "nrt", "gru"]}


def overlap(calls: list[dict]) -> tuple[float, int]:
    """(span from the first start to the last end, most calls running at once)."""
    if not calls:
        return 0.0, 0
    edges = sorted([(c["start"], 1) for c in calls] + [(c["start"] + c["duration_s"], -1) for c in calls],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _t, d in edges:
        running += d
        peak = max(peak, running)
    return max(c["start"] + c["duration_s"] for c in calls) - min(c["start"] for c in calls), peak


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    started = time.monotonic()
    sizes = [3] if opts.quick else [3, 6]
    results = {}
    with common.standin() as standin:
        standin.set_latency(LATENCY_MS)
        for n in sizes:
            stack = Stack(standin, f"bench-par{n}", {"jetstream": False, "peerWait": 3, "regions": REGION_SETS[n]})
            try:
                wall = stack.up()
                calls = stack.calls()
            finally:
                standin.set_latency(0)
                stack.destroy()
                stack.close()
                standin.set_latency(LATENCY_MS)
            scale = [c for c in calls if c["command"] == "scale count"]
            span, peak = overlap(scale)
            whole_span, whole_peak = overlap(calls)
            total = sum(c["duration_s"] for c in calls)
            results[n] = {"regions": n, "wall_s": round(wall, 2), "calls": len(calls),
                          "sum_flyctl_s": round(total, 2), "flyctl_span_s": round(whole_span, 2),
                          "sum_over_wall": common.ratio(total, wall), "peak_concurrent_calls": whole_peak,
                          "scale_calls": len(scale), "scale_sum_s": round(sum(c["duration_s"] for c in scale), 2),
                          "scale_span_s": round(span, 2), "scale_peak_concurrent": peak,
                          "scale_sum_over_span": common.ratio(sum(c["duration_s"] for c in scale), span),
                          "serial_estimate_s": round(wall - span + sum(c["duration_s"] for c in scale), 2),
                          "calls_detail": [{"command": c["command"], "start": round(c["start"] - calls[0]["start"], 2),
                                            "duration_s": c["duration_s"]} for c in calls]}
            log(f"{n} regions: {({k: v for k, v in results[n].items() if k != 'calls_detail'})}")
    rows = [[n, v["wall_s"], v["calls"], v["sum_flyctl_s"], v["sum_over_wall"], v["peak_concurrent_calls"],
             v["scale_calls"], v["scale_sum_s"], v["scale_span_s"], v["scale_sum_over_span"],
             v["serial_estimate_s"], common.ratio(v["serial_estimate_s"], v["wall_s"])]
            for n, v in results.items()]
    tables = [common.table(
        f"First `pulumi up` with {LATENCY_MS} ms added to every flyctl call",
        ["regions", "up wall s", "flyctl calls", "sum of call durations s", "sum / wall", "most calls at once",
         "scale calls", "scale sum s", "scale span s", "scale sum / span", "serial estimate s",
         "serial estimate / wall"], rows)]
    first = results[sizes[-1]]
    timeline = " -> ".join(f"{c['command']}@{c['start']}s" for c in first["calls_detail"])
    notes = [
        f"The stand-in sleeps {LATENCY_MS} ms before every flyctl call (set_latency). 'sum / wall' above 1 means "
        "calls overlapped; 'scale sum / span' near the number of regions means every region's `scale count` ran at "
        "once. 'serial estimate' is the wall time had the scale calls run one after another.",
        "Before the regions the chain is serial by dependency: the app (status, then apps create) first; then its "
        "IPs (ips list, then each allocation) beside the staged secrets; the deploy waits for both. "
        f"Call timeline of the {sizes[-1]}-region up (start offsets): {timeline}",
    ]
    key = (f"parallel provisioning {first['regions']} regions: sum of flyctl durations / wall = "
           f"{first['sum_over_wall']}; scale calls sum/span = {first['scale_sum_over_span']} "
           f"({first['scale_peak_concurrent']} at once)")
    common.record("parallel", "3. Parallel provisioning", opts.quick, started, tables, notes, key, results)
    log(key)


if __name__ == "__main__":
    main()
