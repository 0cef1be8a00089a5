"""Benchmark 2, Fly operations per change: the flyctl calls the real engine makes for each
step of a stack's life, counted from the stand-in's invocation log, beside the example's
manual procedure for the same changes, which is also run against the stand-in with Fly's
current CLI and counted the same way.
"""
from __future__ import annotations

import time

import common
from common import log
from enginestack import Stack, summary

STEPS = ["first up (3 regions)", "no-op up", "add a region (lhr)", "change one nats setting",
         "scale one region 1->3 (syd)", "destroy"]

# The example's README (fly-apps/nats-cluster, 2020): `flyctl init --import example-fly.toml`,
# `flyctl deploy`, `fly regions set ord syd cdg`, `fly scale count 3`, then `flyctl logs` to watch
# the servers meet. With Fly's current CLI (Machines apps) `flyctl init` is gone, `fly regions set`
# fails for Machines apps, and a bare `fly scale count 3` puts all three in the primary region; the
# procedure that works today is below, one entry per command a person types.
MANUAL = {
    "first up (3 regions)": [
        ("fly apps create {app} --org personal", ["apps", "create", "{app}", "--org", "personal"]),
        ("fly deploy --ha=false  (in the example's directory)", ["deploy", ".", "--config", "fly.toml", "--ha=false",
                                                               "--app", "{app}", "--yes"]),
        ("fly scale count 3 --region ord,syd,cdg", ["scale", "count", "3", "--region", "ord,syd,cdg", "--app", "{app}",
                                                     "--yes"]),
        ("fly status  (did they meet?)", ["status", "--app", "{app}"]),
    ],
    "no-op up": [
        ("fly status  (is anything to do?)", ["status", "--app", "{app}"]),
    ],
    "add a region (lhr)": [
        ("fly scale count 1 --region lhr", ["scale", "count", "1", "--region", "lhr", "--app", "{app}", "--yes"]),
    ],
    "change one nats setting": [
        ("edit nats.conf; fly deploy", ["deploy", ".", "--config", "fly.toml", "--app", "{app}", "--yes"]),
    ],
    "scale one region 1->3 (syd)": [
        ("fly scale count 3 --region syd", ["scale", "count", "3", "--region", "syd", "--app", "{app}", "--yes"]),
    ],
    "destroy": [
        ("fly apps destroy {app}", ["apps", "destroy", "{app}", "--yes"]),
    ],
}


def counted(commands: list[str]) -> str:
    """`machine list x2 + status` from a list of command names, in first-seen order."""
    seen = dict.fromkeys(commands)
    return " + ".join(f"{c} x{commands.count(c)}" if commands.count(c) > 1 else c for c in seen) or "-"


def run_ours(standin) -> dict:
    app = "bench-ops"
    stack = Stack(standin, app, {"jetstream": False, "volumeSize": None, "peerWait": 3})
    steps: dict = {}

    def step(name: str, wall: float) -> None:
        steps[name] = {**summary(stack.calls()), "wall_s": round(wall, 2)}
        log(f"ours, {name}: {steps[name]}")
    try:
        step(STEPS[0], stack.up())
        step(STEPS[1], stack.up("--expect-no-changes"))
        stack.project.config({"regions": ["ord", "syd", "cdg", "lhr"]})
        step(STEPS[2], stack.up())
        stack.project.config({"lameDuckGracePeriod": "12s"})
        step(STEPS[3], stack.up())
        stack.project.config({"regions": ["ord", "syd=3", "cdg", "lhr"]})
        step(STEPS[4], stack.up())
    finally:
        wall = stack.destroy()
        step(STEPS[5], wall)
        stack.close()
    return steps


def run_manual(standin) -> dict:
    from nats_fly_testkit import fly as fh
    app = "bench-manual"
    context = fh.render_example(standin.root / "contexts" / app, app, "ord")
    steps: dict = {}
    seen = len(standin.flyctl_log())
    for name in STEPS:
        if name == "change one nats setting":
            conf = context / "nats.conf"
            conf.write_text(conf.read_text().replace("reconnect_error_reports: 1", "reconnect_error_reports: 2"))
        t0 = time.monotonic()
        failed = []
        for _typed, argv in MANUAL[name]:
            proc = standin.flyctl(*[w.format(app=app) for w in argv], cwd=str(context))
            if proc.returncode != 0:
                failed.append(f"{' '.join(argv[:2])}: {proc.stderr.strip()[-200:]}")
        calls = standin.flyctl_log()[seen:]
        seen += len(calls)
        steps[name] = {**summary(calls), "wall_s": round(time.monotonic() - t0, 2),
                       "typed": [typed.format(app="<app>") for typed, _ in MANUAL[name]], "failed": failed}
        log(f"manual, {name}: {steps[name]}")
    return steps


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    started = time.monotonic()
    with common.standin() as standin:
        ours = run_ours(standin)
        manual = run_manual(standin)
    rows = []
    for name in STEPS:
        o, m = ours[name], manual[name]
        rows.append([name, o["mutating"], o["read_only"], ", ".join(o["regions_touched"]) or "-", o["flyctl_s"],
                     o["wall_s"], " + ".join(sorted(set(o["commands"]), key=o["commands"].index)) or "-",
                     counted(o["read_only_commands"]), m["mutating"], m["read_only"], m["wall_s"], len(m["typed"])])
    tables = [common.table(
        "flyctl calls per step: ours (pulumi up through the components) and the example's manual procedure",
        ["step", "ours mutating", "ours read-only", "regions touched", "ours flyctl s", "ours pulumi wall s",
         "ours mutating commands", "ours read-only commands", "manual mutating", "manual read-only",
         "manual flyctl s", "commands typed"],
        rows)]
    tables.append(common.table(
        "The example's manual procedure, as typed (Fly's current CLI), run against the stand-in",
        ["step", "commands a person types"],
        [[name, "; ".join(f"`{t}`" for t in manual[name]["typed"])] for name in STEPS]))
    after_first = STEPS[1:]
    ours_m = sum(ours[s]["mutating"] for s in after_first)
    manual_m = sum(manual[s]["mutating"] for s in after_first)
    failed = {s: manual[s]["failed"] for s in STEPS if manual[s]["failed"]}
    ours_failed = {s: ours[s]["failed"] for s in STEPS if ours[s]["failed"]}
    notes = [
        "ours: the real engine (`pulumi up --yes --skip-preview`) on a copy of the project with the prod stack "
        "(JetStream off, as the example has none; peerWait 3 s), the stand-in's flyctl log read after each step.",
        "ours, read-only: every `pulumi up` (and preview) first runs the probe, one `machine list` (JetStream off: "
        "does the live app hold JetStream volumes this stack would have to detach?), which on a first up finds no "
        "app yet (exit 1, as `status` before `apps create` does); it is the no-op's one call and the one "
        "read-only call of adding or scaling a region. A deploy (first up, a nats setting) adds its own `machine "
        "list` before it (strategy, volumes) and after it (Machines left stopped), and the first up the "
        "look-before-create guards (`status` before `apps create`, `ips list` before allocating), which make "
        "every create idempotent. `pulumi destroy` does not run the program, so no probe. The mutating calls "
        "are as before the probe (the run before it, 2026-11-29 00:22 UTC: 8, 0, 1, 1, 1, 1 mutating and 3, 0, 0, 1, 0, 0 "
        "read-only).",
        "manual: the example's README (2020) says `flyctl init --import example-fly.toml`, `flyctl deploy`, "
        "`fly regions set ord syd cdg`, `fly scale count 3`. On Fly today `flyctl init` no longer exists, "
        "`regions set` fails for Machines apps and a bare `scale count 3` stays in the primary region, so the "
        "procedure counted is its working equivalent with the current CLI (second table). The example has no "
        "secrets, no public IPs and no auth, so its first up needs fewer calls; a person also types every command "
        "and must know which regions a change touches.",
        "A manual no-op is a `fly status` to see nothing needs doing; re-running the procedure instead would "
        "redeploy every Machine.",
    ]
    if failed:
        notes.append(f"manual commands that failed on the stand-in: {failed}")
    if ours_failed:
        notes.append(f"ours, calls that exited non-zero (read-only look-ups that find nothing yet): {ours_failed}")
    key = (f"operations: no-op {ours['no-op up']['mutating']} mutating calls, add a region touched "
           f"{ours['add a region (lhr)']['regions_touched']}, scale touched {ours['scale one region 1->3 (syd)']['regions_touched']}; "
           f"mutating calls after the first up, ours/manual = {ours_m}/{manual_m} = {common.ratio(ours_m, manual_m)}; "
           f"read-only after the first up {sum(ours[s]['read_only'] for s in after_first)} "
           f"({len(after_first) - 1} probes, one per up, and the deploy's own "
           f"{sum(ours[s]['read_only'] for s in after_first) - (len(after_first) - 1)})")
    common.record("operations", "2. Fly operations per change", opts.quick, started, tables, notes, key,
                  {"ours": ours, "manual": manual})
    log(key)


if __name__ == "__main__":
    main()
