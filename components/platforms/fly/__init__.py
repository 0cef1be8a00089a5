"""The Fly platform: nats-server Machines of one Fly app in several regions, driven through flyctl by
Commands: FlyApp (the app, its IPs, its secrets) -> NatsImage (the build context and its deploy) ->
NatsRegion per region (its Machines, and volumes with JetStream)."""

from __future__ import annotations

from ...config.settings import MAX_KILL_TIMEOUT, MEMORY_PER_CPU_MB, MEMORY_STEP_MB, VM_PRESETS, Settings, label
from ...render import buildctx
from .. import Claim, Cluster


class FlyPlatform:
    name = "fly"

    def check(self, s: Settings) -> list[str]:
        """What only Fly reads: the stop timeout, the proxy's limits, the VM."""
        problems = []
        lame_duck_total = s.lame_duck_grace_period + s.lame_duck_duration
        if not lame_duck_total < s.kill_timeout <= MAX_KILL_TIMEOUT:
            problems.append(f"{label('killTimeout')}: {s.kill_timeout}s must outlast lameDuckGracePeriod + "
                            f"lameDuckDuration ({lame_duck_total}s) and be at most {MAX_KILL_TIMEOUT}s (Fly's limit)")
        if s.soft_limit > s.hard_limit:
            problems.append(f"{label('softLimit')}: {s.soft_limit} exceeds {label('hardLimit')} ({s.hard_limit}); "
                            f"allowed: a softLimit that does not exceed hardLimit (lower one, or raise the other)")
        kind, cpus = VM_PRESETS[s.vm_size]
        low, high = (per_cpu * cpus for per_cpu in MEMORY_PER_CPU_MB[kind])
        if s.vm_memory_mb % MEMORY_STEP_MB or not low <= s.vm_memory_mb <= high:
            problems.append(f"{label('vmMemory')}: {s.vm_memory_mb} MB does not fit vmSize {s.vm_size}; allowed: "
                            f"a multiple of {MEMORY_STEP_MB} from {low} to {high} MB")
        return problems

    def claims(self, s: Settings, cluster: str) -> list[Claim]:
        return [Claim("fly app", frozenset({s.app}), f"{label('app')}: {s.app!r} is the Fly app of cluster "
                      f"{{others}} of this program too; allowed: an app of its own for each cluster")]

    def files(self, s: Settings) -> dict[str, str]:
        return buildctx.build_context(s)

    def build(self, cluster: Cluster):
        from .resources import build
        return build(cluster)


PLATFORM = FlyPlatform()
