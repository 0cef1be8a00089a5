"""Benchmark 3, parallel provisioning: the wall time of a first `pulumi up` against the sum of
the durations of the flyctl calls it made, with the stand-in's artificial latency on every call
(a realistic round trip to Fly's API and its Machines), and in a second setting also with Machine
creation slowed to Fly-like seconds and several Machines in some regions.

The engine starts every region's Command at once, but `flyctl scale count` leases every Machine of
the app, so `python -m nats_fly fly region` takes a lock per app and the regions take turns. This
measures what that costs in the same up (the scale calls' span against their sum, the up's wall
time against a computed estimate had the regions run at once), and, in the same run, what the
same `scale count` calls do when started at once without the lock (flyctl straight, a second app
at the same point): they meet on the leases.
"""
from __future__ import annotations

import concurrent.futures
import re
import time
from collections import Counter

import common
from common import log
from enginestack import Stack

LATENCY_MS = 2000
CREATE_DELAY_S = 2.0
REGION_SETS = {3: ["ord", "syd", "cdg"], 6: ["ord", "syd", "cdg", "lhr", "nrt", "gru"]}
LAYOUT = {"ord": 3, "syd": 2, "cdg": 2, "lhr": 1, "nrt": 1, "gru": 1}  # 10 Machines
QUICK_LAYOUT = {"ord": 2, "syd": 2, "cdg": 1}
LOCK_WAIT = "waiting for another operation on"  # flyops.app_lock
LEASE_RETRY = "a lease is held elsewhere"  # flyops.run
LEASE_WAIT = "Waiting on lease for machine"  # flyctl's own wait (the stand-in prints it as flyctl does)


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


def scale_figures(scale: list[dict]) -> dict:
    span, peak = overlap(scale)
    total = sum(c["duration_s"] for c in scale)
    return {"scale_calls": len(scale), "scale_sum_s": round(total, 2), "scale_span_s": round(span, 2),
            "scale_peak_concurrent": peak, "scale_sum_over_span": common.ratio(total, span),
            "scale_longest_s": round(max((c["duration_s"] for c in scale), default=0), 2),
            "scale_failed": sum(1 for c in scale if c.get("exit"))}


def destroy_fast(standin, stack: Stack) -> None:
    """Destroy `stack` without the added latency and create delay, then put them back."""
    saved = standin.settings()
    standin.settings(latency_ms=0, create_delay_s=0)
    stack.destroy()
    stack.close()
    standin.settings(latency_ms=saved["latency_ms"], create_delay_s=saved["create_delay_s"])


def first_up(standin, name: str, regions: list[str], layout: dict[str, int]) -> dict:
    """One first `pulumi up` of `layout`, its flyctl calls, then destroy (without the latency)."""
    config = {"jetstream": False, "volumeSize": None, "peerWait": 3,
              "regions": [f"{r}={n}" if n != 1 else r for r, n in layout.items()]}
    stack = Stack(standin, name, config)
    try:
        wall = stack.up()
        calls = stack.calls()
        output = stack.output
        made = Counter(m["region"] for m in standin.machines(name))
    finally:
        destroy_fast(standin, stack)
    scale = [c for c in calls if c["command"] == "scale count"]
    whole_span, whole_peak = overlap(calls)
    total = sum(c["duration_s"] for c in calls)
    figures = scale_figures(scale)
    # Computed, not measured: the same up had the scale calls all run at once (as before the lock,
    # leases aside): the chain before them as measured, then the longest scale call alone.
    at_once = wall - figures["scale_span_s"] + figures["scale_longest_s"]
    return {"regions": len(layout), "machines": sum(layout.values()), "layout": layout,
            "machines_made": dict(made), "machines_as_asked": dict(made) == layout,
            "wall_s": round(wall, 2), "calls": len(calls), "sum_flyctl_s": round(total, 2),
            "flyctl_span_s": round(whole_span, 2), "sum_over_wall": common.ratio(total, wall),
            "peak_concurrent_calls": whole_peak, **figures,
            "serial_estimate_s": round(wall - figures["scale_span_s"] + figures["scale_sum_s"], 2),
            "at_once_estimate_s": round(at_once, 2), "wall_over_at_once": common.ratio(wall, at_once),
            "failed_mutating": [f"{c['command']} (exit {c['exit']})" for c in calls if c["mutates"] and c.get("exit")],
            "failed_read_only": [f"{c['command']} (exit {c['exit']})" for c in calls
                                 if not c["mutates"] and c.get("exit")],
            "region_commands_that_waited_for_the_lock": len(re.findall(LOCK_WAIT, output)),
            "lease_retries": len(re.findall(LEASE_RETRY, output)),
            "calls_detail": [{"command": c["command"], "start": round(c["start"] - calls[0]["start"], 2),
                              "duration_s": c["duration_s"], "exit": c.get("exit"),
                              "region": c["argv"][c["argv"].index("--region") + 1] if "--region" in c["argv"] else None}
                             for c in calls]}


def unlocked(standin, name: str, layout: dict[str, int]) -> dict:
    """A second app brought to where the regions start (a first up of its primary region alone: the
    deploy's one Machine), then the same `scale count` calls the region Commands make, all at once,
    straight to flyctl: no lock."""
    from nats_fly.contract import flyctl
    primary = next(iter(layout))
    stack = Stack(standin, name, {"jetstream": False, "volumeSize": None, "peerWait": 3, "regions": [primary]})
    try:
        stack.up()
        stack.calls()
        argvs = [flyctl.scale_argv(name, region, n)[1:] for region, n in layout.items()]
        with concurrent.futures.ThreadPoolExecutor(len(argvs)) as pool:
            procs = list(pool.map(lambda a: standin.flyctl(*a), argvs))
        calls = [c for c in stack.calls() if c["command"] == "scale count"]
        made = Counter(m["region"] for m in standin.machines(name))
    finally:
        destroy_fast(standin, stack)
    figures = scale_figures(calls)
    return {**figures, "machines_made": dict(made), "machines_as_asked": dict(made) == layout,
            "calls_that_waited_on_a_lease": sum(1 for p in procs if LEASE_WAIT in p.stdout + p.stderr),
            "errors": [(p.stderr or p.stdout).strip()[-300:] for p in procs if p.returncode],
            "calls_detail": [{"region": c["argv"][c["argv"].index("--region") + 1],
                              "start": round(c["start"] - min(x["start"] for x in calls), 2),
                              "duration_s": c["duration_s"], "exit": c.get("exit")} for c in calls]}


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    started = time.monotonic()
    sizes = [3] if opts.quick else [3, 6]
    layout = QUICK_LAYOUT if opts.quick else LAYOUT
    results: dict = {"latency": {}, "create": {}}
    with common.standin() as standin:
        standin.settings(latency_ms=LATENCY_MS, create_delay_s=0)
        for n in sizes:
            v = results["latency"][n] = first_up(standin, f"bench-par{n}", REGION_SETS[n], {r: 1 for r in REGION_SETS[n]})
            log(f"{n} regions, latency: {({k: x for k, x in v.items() if k != 'calls_detail'})}")
        standin.settings(latency_ms=LATENCY_MS, create_delay_s=CREATE_DELAY_S)
        v = results["create"]["locked"] = first_up(standin, "bench-parc", list(layout), layout)
        log(f"create delay, pulumi up: {({k: x for k, x in v.items() if k != 'calls_detail'})}")
        v = results["create"]["unlocked"] = unlocked(standin, "bench-paru", layout)
        log(f"create delay, scale calls at once without the lock: {({k: x for k, x in v.items() if k != 'calls_detail'})}")
        standin.settings(latency_ms=0, create_delay_s=0)

    def row(label: str, v: dict) -> list:
        return [label, v["wall_s"], v["calls"], v["sum_flyctl_s"], v["sum_over_wall"], v["peak_concurrent_calls"],
                v["scale_calls"], v["scale_sum_s"], v["scale_span_s"], v["scale_sum_over_span"],
                v["at_once_estimate_s"], v["wall_over_at_once"], len(v["failed_mutating"]), v["lease_retries"],
                f"{sum(v['machines_made'].values())}/{v['machines']}"]

    rows = [row(f"{n} regions x 1 Machine", v) for n, v in results["latency"].items()]
    locked = results["create"]["locked"]
    rows.append(row(f"{locked['regions']} regions, {locked['machines']} Machines, create {CREATE_DELAY_S:g} s", locked))
    free = results["create"]["unlocked"]
    tables = [
        common.table(
            f"First `pulumi up` with {LATENCY_MS} ms added to every flyctl call (measured; 'regions at once' computed)",
            ["up", "up wall s", "flyctl calls", "sum of call durations s", "sum / wall", "most calls at once",
             "scale calls", "scale sum s", "scale span s", "scale sum / span", "regions at once, computed s",
             "wall / at once", "mutating calls failed", "lease retries", "Machines made"], rows),
        common.table(
            f"The same {free['scale_calls']} `scale count` calls ({', '.join(f'{r}={n}' for r, n in layout.items())}), "
            f"{LATENCY_MS} ms per call, create {CREATE_DELAY_S:g} s: in the up (lock) and all at once without it "
            "(measured, same run)",
            ["how", "scale span s", "scale sum s", "sum / span", "most at once", "longest call s",
             "calls failed", "calls that waited on a lease", "Machines made"],
            [["pulumi up, the regions take turns (lock)", locked["scale_span_s"], locked["scale_sum_s"],
              locked["scale_sum_over_span"], locked["scale_peak_concurrent"], locked["scale_longest_s"],
              locked["scale_failed"], "-", f"{sum(locked['machines_made'].values())}/{locked['machines']}"],
             ["flyctl straight, all at once (no lock)", free["scale_span_s"], free["scale_sum_s"],
              free["scale_sum_over_span"], free["scale_peak_concurrent"], free["scale_longest_s"],
              free["scale_failed"], free["calls_that_waited_on_a_lease"],
              f"{sum(free['machines_made'].values())}/{sum(layout.values())}"]]),
    ]
    last = results["latency"][sizes[-1]]
    timeline = " -> ".join(f"{c['command']}{'(' + c['region'] + ')' if c['region'] else ''}@{c['start']}s"
                           for c in last["calls_detail"])
    ctimeline = " -> ".join(f"{c['region']}@{c['start']}s/{c['duration_s']:.1f}s"
                            for c in locked["calls_detail"] if c["command"] == "scale count")
    utimeline = " -> ".join(f"{c['region']}@{c['start']}s/{c['duration_s']:.1f}s"
                            for c in sorted(free["calls_detail"], key=lambda c: c["start"]))
    ends = sorted(c["start"] + c["duration_s"] for c in free["calls_detail"])
    gaps = [round(b - a, 1) for a, b in zip(ends, ends[1:])]
    # Computed from two measurements of this run: the locked up with its scale span replaced by the
    # span of the same calls run at once without the lock (leases as flyctl meets them).
    no_lock = locked["wall_s"] - locked["scale_span_s"] + free["scale_span_s"]
    results["create"]["no_lock_estimate_s"] = round(no_lock, 2)
    results["create"]["wall_over_no_lock"] = common.ratio(locked["wall_s"], no_lock)
    notes = [
        f"Measured: the stand-in sleeps {LATENCY_MS} ms before every flyctl call (set_latency); in the last up each "
        f"Machine create also takes {CREATE_DELAY_S:g} s (create_delay_s; `scale count` makes a region's Machines "
        "up to 5 at once, as flyctl does). 'sum / wall' above 1 means calls overlapped. 'scale sum / span' is 1 when "
        "the `scale count` calls ran one after another (a little under 1: the lock's hand-over between them) and "
        "the number of regions when they all ran at once.",
        "Computed: 'regions at once' is the up's wall time had its scale calls all run at once with no lease "
        "between them (the engine's behaviour before the lock, on a stand-in without leases): wall - scale span + "
        "the longest scale call, all from the same up. 'wall / at once' is what the turns cost against it.",
        "Why the turns: `flyctl scale count` leases every Machine of the app, whatever --region says, and "
        "gives up after a minute of waiting on a held lease (README, Leases). The second table runs the same "
        "calls at once without the lock on a second app at the same point (its primary region's Machine made by "
        f"a first up of that region alone), in the same run: they did not run at once either, they queued on the "
        f"lease of the app's Machine (their ends {min(gaps, default=0)}-{max(gaps, default=0)} s apart, one "
        f"region's creates each; {free['calls_that_waited_on_a_lease']} of {free['scale_calls']} printed flyctl's "
        "'Waiting on lease for machine', which it prints after 2 s of waiting), with only each call's round trip "
        f"overlapped. The last to get the lease took {free['scale_longest_s']} s in all, most of it waiting, of the "
        "minute flyctl waits; a queue of regions whose creates take Fly's real time can pass that minute, and the "
        "call fails (not measured here).",
        f"So for the {locked['machines']}-Machine up: measured wall {locked['wall_s']} s with the lock; computed "
        f"{round(no_lock, 2)} s without it (the same up, its scale span replaced by the unlocked calls' measured "
        f"span), wall / that = {common.ratio(locked['wall_s'], no_lock)}; computed {locked['at_once_estimate_s']} s "
        f"had the regions run at once with no leases, wall / that = {locked['wall_over_at_once']}.",
        f"The up's region Commands that found the lock taken: {locked['region_commands_that_waited_for_the_lock']} "
        f"of {locked['scale_calls']} (flyops' 'waiting for another operation', in the up's output); lease retries by "
        f"flyops: {locked['lease_retries']}; mutating calls that failed: {len(locked['failed_mutating'])}; Machines "
        f"made as asked: {locked['machines_as_asked']} ({locked['machines_made']}). A first up's probe (`machine "
        "list`, read-only) and the `status` before `apps create` fail as they should: the app does not exist yet.",
        "Before the regions the chain is serial by dependency: the probe, the app (status, then apps create) "
        "first; then its IPs (ips list, then each allocation) beside the staged secrets; the deploy (machine list "
        f"first, and after it another to name stopped Machines) waits for both. Call timeline of the "
        f"{last['regions']}-region up (start offsets): {timeline}",
        f"Scale calls of the {locked['machines']}-Machine up (region@start/duration): {ctimeline}; the same "
        f"calls without the lock: {utimeline}.",
        "Before the lock (bench run of 2026-11-29 00:23 UTC, 2 s latency, no create delay, another run): 6 regions "
        "up wall 17.44 s, sum / wall 1.62, scale sum / span 5.88 (all 6 at once).",
    ]
    key = (f"parallel provisioning {locked['regions']} regions / {locked['machines']} Machines "
           f"(2 s per call, {CREATE_DELAY_S:g} s per create): scale calls sum/span = {locked['scale_sum_over_span']} "
           f"(one at a time, {len(locked['failed_mutating'])} failed); up wall / regions-at-once estimate = "
           f"{locked['wall_over_at_once']} (computed); without the lock the same calls queue on the lease: span "
           f"{free['scale_span_s']} s vs {locked['scale_span_s']} s, up wall / no-lock estimate = "
           f"{results['create']['wall_over_no_lock']}")
    common.record("parallel", "3. Parallel provisioning", opts.quick, started, tables, notes, key, results)
    log(key)


if __name__ == "__main__":
    main()
