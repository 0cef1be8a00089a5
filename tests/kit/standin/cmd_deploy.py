"""flyctl deploy and scale count: placing, replacing and counting Machines."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import time
from dataclasses import asdict

from . import flytoml, image as images
from . import state as st
from .cli import APP, NON_INTERACTIVE, YES, Command, Context, FlyError
from .cmd_apps import new_volume
from .leases import LeaseHeld

STANDARD_PORTS = {(80, ("http",)), (443, ("http", "tls")), (443, ("tls", "http"))}


# --- the Machines API's own checks -------------------------------------------------------------

# flyctl issue #4721 (open since 2026-01-07, "`kill_signal = 'SIGUSR2'` rejected but docs explicitly
# state that it is supported"; fix PR #5210 unmerged): the Machines API refuses a Machine whose
# stop_config.signal is SIGUSR2, so `deploy` and `scale count` fail; flyctl itself does not check
# it. The issue's own error output could not be read here (only its opening is stored), so the
# body below is the stand-in's wording in the API's style; the prefixes are fly-go's
# (flaps/flaps_machines.go Launch "failed to launch VM: %w", Update "failed to update VM %s: %w").
SIGUSR2_REFUSED = "invalid stop_config.signal: SIGUSR2 is not a supported signal"


def api_refusal(ctx: Context, config: dict) -> str | None:
    """Why the Machines API would refuse this Machine config, or None."""
    signal = config.get("stop_config", {}).get("signal")
    if signal == "SIGUSR2" and not ctx.daemon.settings.get("accept_sigusr2"):
        return SIGUSR2_REFUSED
    return None


# --- leases (leases.py) ---------------------------------------------------------------------------

LEASE_TTL_DEPLOY = 13.0  # internal/command/deploy/machines.go DefaultLeaseTtl, refreshed while held
LEASE_TTL_MACHINE = 120.0  # internal/machine/lease.go AcquireLease: fly.IntPointer(120)
MAX_CONCURRENT_LEASES = 20  # internal/machine/lease.go maxConcurrentLeases
MAX_CONCURRENT_ACTIONS = 5  # internal/command/scale/count_machines.go maxConcurrentActions


async def lease_machines(ctx: Context, machines: list[st.Machine]) -> list[tuple[str, str]]:
    """flyctl's mach.AcquireLeases (internal/machine/lease.go), used by `scale count`,
    `machine stop` and `machine destroy`: every given Machine, up to 20 at once, TTL 120 s,
    "Waiting on lease for machine <id>..." after 2 s; the first failure is the command's error,
    "failed to obtain lease: failed to get lease on VM <id>: ...". -> (id, nonce) to release."""
    held: list[tuple[str, str]] = []
    gate = asyncio.Semaphore(MAX_CONCURRENT_LEASES)

    async def one(m: st.Machine) -> None:
        async with gate:
            if m.id not in ctx.state.machines:  # destroyed since it was listed (Fly: a 404, retried)
                raise FlyError(f"failed to obtain lease: failed to get lease on VM {m.id}: machine not found")
            nonce = await ctx.daemon.leases.acquire(
                m.id, ctx.owner, LEASE_TTL_MACHINE,
                on_wait=lambda: ctx.out(f"Waiting on lease for machine {m.id}..."))
            held.append((m.id, nonce))

    try:
        results = await asyncio.gather(*(one(m) for m in machines), return_exceptions=True)
    except BaseException:  # the caller hung up while we waited
        release_leases(ctx, held)
        raise
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        release_leases(ctx, held)
        if isinstance(failed[0], LeaseHeld):
            raise FlyError(f"failed to obtain lease: {failed[0]}")
        raise failed[0]
    return held


async def lease_for_deploy(ctx: Context, machines: list[st.Machine]) -> list[tuple[str, str]]:
    """The deploy's machineSet.AcquireLeases (internal/machine/machine_set.go): all the Machines it
    will update, at once, TTL 13 s kept fresh; each failure is a warning and the deploy fails with
    "error acquiring leases on all machines"."""
    held: list[tuple[str, str]] = []

    async def one(m: st.Machine) -> None:
        held.append((m.id, await ctx.daemon.leases.acquire(m.id, ctx.owner, LEASE_TTL_DEPLOY, refreshed=True)))

    try:
        results = await asyncio.gather(*(one(m) for m in machines), return_exceptions=True)
    except BaseException:
        release_leases(ctx, held)
        raise
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for e in failed:
            ctx.err(f"WARN failed to acquire lease: {e}")
        release_leases(ctx, held)
        if not all(isinstance(e, LeaseHeld) for e in failed):
            raise failed[0]
        raise FlyError("error acquiring leases on all machines")
    return held


def release_leases(ctx: Context, held: list[tuple[str, str]]) -> None:
    for machine_id, nonce in held:
        ctx.daemon.leases.release(machine_id, nonce)


# --- launching and replacing one Machine ---------------------------------------------------

async def launch(ctx: Context, app: st.App, region: str, config: dict, image: dict,
                 volume: st.Volume | None = None) -> st.Machine:
    """Create a Machine (POST /machines); like Fly's Launch it returns while the Machine is still
    booting. The create itself takes `create_delay_s` (Fly: seconds)."""
    refusal = api_refusal(ctx, config)
    if refusal:
        raise FlyError(f"failed to launch VM: {refusal}")
    if config.get("mounts") and volume is None:
        raise FlyError("Launching the machine requires a volume but there is no volume to attach or create")
    if config.get("mounts") and volume.attached_machine_id:
        # The API's 412: the volume is in use by another Machine (community.fly.io "409 Conflict
        # error from Machines API": "412 (Precondition Failed) which can only happen if the machine
        # attempts to use a volume that's already in use by another machine"). Wording: stand-in's.
        raise FlyError(f"failed to launch VM: volume {volume.id} is already in use by machine "
                       f"{volume.attached_machine_id}")
    machine_id = ctx.daemon.new_machine_id()
    if config.get("mounts"):
        volume.attached_machine_id = machine_id  # claimed by the request, before the create finishes
    delay = float(ctx.daemon.settings.get("create_delay_s") or 0)
    try:
        if delay:
            await asyncio.sleep(delay)
    except BaseException:
        if config.get("mounts"):
            volume.attached_machine_id = None
        raise
    address = ctx.daemon.network.allocate(region)
    config = copy.deepcopy(config)
    m = st.Machine(id=machine_id, name=st.machine_name(), app=app.name, region=region,
                   private_ip=address.v6, private_ipv4=address.v4, config=config, image=image,
                   secrets=dict(app.secrets))
    if config.get("mounts"):
        config["mounts"] = [{**config["mounts"][0], "volume": volume.id, "size_gb": volume.size_gb}]
    m.event("launch", "created", source="user")
    ctx.state.machines[m.id] = m
    ctx.daemon.first_seen[m.id] = time.monotonic()  # when its all.vms entry starts to propagate
    ctx.state.save()
    ctx.daemon.background(ctx.runtime.start(m))
    return m


async def wait_state(m: st.Machine, wanted: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while m.state != wanted:
        if asyncio.get_running_loop().time() > deadline:
            raise FlyError(f"timeout reached waiting for machine's state to change to {wanted} "
                           f"(machine {m.id} is {m.state})")
        await asyncio.sleep(0.05)


async def wait_healthy(ctx: Context, m: st.Machine, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not ctx.runtime.healthy(m):
        if asyncio.get_running_loop().time() > deadline:
            raise FlyError(f"timeout reached waiting for health checks to pass for machine {m.id}: "
                           "context deadline exceeded")
        if m.state not in ("starting", "started"):
            ctx.err(ctx.runtime.console_tail(m.id))
            raise FlyError(f"machine {m.id} failed to start: it is {m.state} (exit code {m.exit_code})")
        await asyncio.sleep(0.1)


def skip_launch(m: st.Machine) -> bool:
    """internal/command/deploy/machines_launchinput.go skipLaunch (newest): an updated Machine is
    started only if it was started, starting or failed; a stopped, suspended or created one is
    updated in place and stays as it was (fly.md section 7; the newest function body is quoted in a
    public write-up on bluegreen deploys found by the code search)."""
    return m.state not in ("started", "starting", "failed")


async def update(ctx: Context, m: st.Machine, config: dict, image: dict, secrets: dict) -> None:
    """Fly's in-place Machine update: stop it gracefully, swap config and image, start it; a
    Machine that was not running keeps its state (skip_launch)."""
    refusal = api_refusal(ctx, config)
    if refusal:
        raise FlyError(f"failed to update VM {m.id}: {refusal}")
    stay = skip_launch(m)
    if not stay:
        m.state = "replacing"
    m.event("update", "replacing" if not stay else m.state, source="user")
    if not stay:
        await ctx.runtime.stop(m)
    mounts = m.config.get("mounts", [])
    m.config = copy.deepcopy(config)
    if mounts and m.config.get("mounts"):
        m.config["mounts"] = [{**m.config["mounts"][0], "volume": mounts[0]["volume"],
                               "size_gb": mounts[0].get("size_gb", 1)}]
    m.image, m.secrets, m.instance_id = image, dict(secrets), st.ulid()
    m.updated_at = st.now_iso()
    if not stay:
        await ctx.runtime.start(m)
    ctx.state.save()


async def replace(ctx: Context, app: st.App, m: st.Machine, config: dict, image: dict,
                  volume: st.Volume) -> st.Machine:
    """[mounts] added to a group whose Machine has no volume: a volume cannot be attached to an
    existing Machine, so flyctl replaces it with a new one that has it
    (machines_launchinput.go launchInputForUpdate: RequiresReplacement)."""
    await ctx.runtime.stop(m)
    await ctx.runtime.destroy(m, kill=True)
    ctx.state.save()
    return await launch(ctx, app, m.region, config, image, volume)


def batch_size(value, count: int) -> int:
    value = float(value)
    return max(1, int(value) if value >= 1 else math.floor(count * value))


async def roll(ctx: Context, app: st.App, machines: list[st.Machine], config: dict, image: dict,
               strategy: str, wait_timeout: float, max_unavailable,
               replacements: dict | None = None) -> None:
    """Update the Machines under the deploy's leases (taken here, released at the end)."""
    replacements = replacements or {}
    held = await lease_for_deploy(ctx, machines)
    try:
        ctx.out(f"Updating existing machines in '{app.name}' with {strategy} strategy")
        total = len(machines)
        step = total if strategy == "immediate" else batch_size(max_unavailable, total)

        async def one(i: int, m: st.Machine) -> None:
            if m.id in replacements:
                ctx.out(f"  [{i}/{total}] Replacing {m.id} [app] by a new machine with volume {replacements[m.id].id}")
                m = await replace(ctx, app, m, config, image, replacements[m.id])
                stay = False
            else:
                ctx.out(f"  [{i}/{total}] Updating {m.id} [app]")
                stay = skip_launch(m)
                await update(ctx, m, config, image, app.secrets)
            if strategy != "immediate" and not stay:
                await wait_state(m, "started", wait_timeout)
                ctx.out(f"  [{i}/{total}] Checking health of machine {m.id}")
                await wait_healthy(ctx, m, wait_timeout)
            ctx.out(f"  [{i}/{total}] Machine {m.id} is now in a good state")

        for start in range(0, total, step):
            await asyncio.gather(*(one(start + k + 1, m) for k, m in enumerate(machines[start:start + step])))
        ctx.out("Finished deploying")
    finally:
        release_leases(ctx, held)


async def restart_with_secrets(ctx: Context, app: st.App, machines: list[st.Machine], detach: bool) -> None:
    """`secrets set/unset/import` without --stage: a release that restarts Machines on the remote config."""
    last = app.complete_release()
    if last is None:
        ctx.out("Secrets are staged for the first deployment")
        return
    release = st.Release(version=app.releases[-1].version + 1, id=st.ulid(), status="running",
                         image=last.image, config=last.config, created_at=st.now_iso())
    app.releases.append(release)
    config = flytoml.machine_config(last.config, last.image["ref"], release.version, release.id)
    async with releasing(ctx, release):
        await roll(ctx, app, machines, config, last.image, "rolling", 300,
                   last.config.get("deploy", {}).get("max_unavailable", 0.33))


@contextlib.asynccontextmanager
async def releasing(ctx: Context, release: st.Release):
    """The release is complete when the block succeeds, failed when it raises."""
    try:
        yield
        release.status = "complete"
    except FlyError:
        release.status = "failed"
        raise
    finally:
        ctx.state.save()


# --- deploy ----------------------------------------------------------------------------------

def _dedicated_ports(cfg: dict) -> bool:
    for svc in cfg.get("services", []):
        for p in svc.get("ports", []):
            if (p["port"], tuple(p.get("handlers", []))) not in STANDARD_PORTS:
                return True
    return False


def _first_count(cfg: dict, ha: bool) -> int:
    if not ha or flytoml.mounts(cfg):
        return 1
    return 2 if cfg.get("services") else 1


async def deploy(ctx: Context, flags, args):
    workdir = ctx.path(args[0]) if args else ctx.cwd
    config_path = ctx.path(flags["config"]) if flags.get("config") else workdir / "fly.toml"
    try:
        cfg = flytoml.load(config_path)
    except flytoml.ConfigError as e:
        raise FlyError(str(e)) from None
    if flags.get("app"):
        cfg["app"] = flags["app"]
    if flags.get("primary-region"):
        cfg["primary_region"] = flags["primary-region"]
    app = ctx.state.apps.get(cfg.get("app") or "")
    if app is None:
        raise FlyError(f'Could not find App "{cfg.get("app")}"')
    primary = cfg.get("primary_region")
    if not primary:
        raise FlyError("region code must be specified when not running interactively")
    strategy = flags.get("strategy") or cfg.get("deploy", {}).get("strategy", "rolling")
    if strategy not in flytoml.STRATEGIES:
        raise FlyError(f"unsupported deployment strategy '{strategy}'")
    if strategy in ("canary", "bluegreen") and flytoml.mounts(cfg):
        raise FlyError(f"{strategy} deployment strategy is not supported for machines with attached volumes")
    if strategy in ("canary", "bluegreen"):
        raise FlyError(f"the stand-in does not implement the {strategy} strategy")
    wait_timeout = flytoml.seconds(flags.get("wait-timeout") or cfg.get("deploy", {}).get("wait_timeout", "5m"))
    max_unavailable = flags.get("max-unavailable") or cfg.get("deploy", {}).get("max_unavailable", 0.33)

    ctx.authorize_app(app)
    ctx.out("==> Verifying app config\n--> Verified app config\n==> Building image")
    build = cfg.get("build", {})
    if build.get("image") or flags.get("image"):
        dockerfile_text = f"FROM {flags.get('image') or build['image']}\n"
        dockerfile = ctx.daemon.root / "images" / f"{app.name}.image.Dockerfile"
        dockerfile.parent.mkdir(parents=True, exist_ok=True)
        dockerfile.write_text(dockerfile_text)
    elif build.get("dockerfile"):
        dockerfile = (config_path.parent / build["dockerfile"]).resolve()
    elif flags.get("dockerfile"):
        dockerfile = ctx.path(flags["dockerfile"])
    else:
        dockerfile = workdir / "Dockerfile"
    label = f"deployment-{st.ulid()}"
    try:
        img = await asyncio.to_thread(images.build, workdir, dockerfile, ctx.daemon.root / "images",
                                      app.name, label)
    except images.BuildError as e:
        raise FlyError(f"failed to fetch an image or build from source: {e}") from None
    ctx.out(f"--> Building image done\nimage: {img.ref}\nimage size: 21 MB\n")
    image = asdict(img)
    existing = [m for m in ctx.state.app_machines(app.name) if m.process_group == "app"]
    only = set(filter(None, (flags.get("regions") or flags.get("only-regions") or "").split(",")))
    skip = set(filter(None, (flags.get("exclude-regions") or "").split(",")))
    chosen = [m for m in sorted(existing, key=lambda m: m.created_at)
              if (not only or m.region in only) and m.region not in skip]
    # NewMachineDeployment's validateVolumeConfig runs before the release is created.
    replacements = validate_volume_config(ctx, app, cfg, chosen) if chosen and not flags.get("build-only") else {}
    release = st.Release(version=(app.releases[-1].version + 1) if app.releases else 1, id=st.ulid(),
                         status="running", image=image, config=cfg, created_at=st.now_iso())
    app.releases.append(release)
    ctx.state.save()
    config = flytoml.machine_config(cfg, img.ref, release.version, release.id)
    if flags.get("build-only"):
        release.status = "complete"
        ctx.state.save()
        return
    ctx.out(f"Watch your deployment at https://fly.io/apps/{app.name}/monitoring\n")
    async with releasing(ctx, release):
        if existing:
            await roll(ctx, app, chosen, config, image, strategy, wait_timeout, max_unavailable, replacements)
        else:
            await first_deploy(ctx, app, cfg, config, image, primary, strategy, wait_timeout,
                               ha=flags.get("ha", True), detach=flags.get("detach", False),
                               initial_size=flags.get("volume-initial-size"))
    ctx.out(f"\nVisit your newly deployed app at https://{app.name}.fly.dev/")


def unattached(ctx: Context, app: st.App, name: str) -> list[st.Volume]:
    """machines.go setVolumes: the app's unattached volumes of that name, in every region."""
    return sorted((v for v in ctx.state.app_volumes(app.name) if v.name == name and not v.attached_machine_id),
                  key=lambda v: v.created_at)


def validate_volume_config(ctx: Context, app: st.App, cfg: dict, machines: list[st.Machine]) -> dict:
    """internal/command/deploy/machines.go validateVolumeConfig (fly.md section 7: ~596-651 in the
    newest snapshot) for the existing Machines of group 'app'. -> Machine id -> the volume its
    replacement gets, for Machines that must be replaced to gain one."""
    mounts = flytoml.mounts(cfg)
    source = mounts[0]["source"] if mounts else None
    if source is None:
        # [mounts] removed while Machines hold volumes: flyctl asks whether to detach (and replace
        # the Machine) with prompt.Confirm, which fails without a terminal even with --yes. Texts as
        # a real flyctl v0.4.78 run printed them (quoted in a public project's deploy notes found by
        # the code search); the newest machines.go itself is not in the index.
        for m in machines:
            if m.config.get("mounts"):
                ctx.err(f"Warning! machine {m.id} [app] has a volume mounted but app config does not specify a "
                        f"volume.\nThis usually indicates a misconfiguration.")
                if ctx.interactive:
                    raise FlyError("the stand-in cannot prompt: \"Do you still want to continue and detach the "
                                   "volume? This will replace the machine.\"")
                raise FlyError(NON_INTERACTIVE)
        return {}
    needs = [m for m in machines if not m.config.get("mounts")]
    free = unattached(ctx, app, source)
    have = {}
    for v in free:
        have[v.region] = have.get(v.region, 0) + 1
    want = {}
    for m in needs:
        want[m.region] = want.get(m.region, 0) + 1
    # Go prints these in map order (random); the stand-in sorts them.
    missing = [f"{r}={n - have.get(r, 0)}" for r, n in sorted(want.items()) if n > have.get(r, 0)]
    if missing:
        raise FlyError(f"Process group 'app' needs volumes with name '{source}' to fulfill mounts defined in "
                       f"fly.toml; Run `fly volume create {source} -r REGION -n COUNT` for the following regions "
                       f"and counts: {' '.join(missing)}")
    replacements = {}
    for m in needs:
        vol = next(v for v in free if v.region == m.region)
        free.remove(vol)
        replacements[m.id] = vol
    return replacements


async def first_deploy(ctx: Context, app: st.App, cfg: dict, config: dict, image: dict, primary: str,
                       strategy: str, wait_timeout: float, ha: bool, detach: bool, initial_size) -> None:
    first = app.complete_release() is None  # deploy_first.go isFirstDeploy: the app was never deployed
    if cfg.get("services") and not app.ips and not _dedicated_ports(cfg):
        from .cmd_apps import ips_allocate_v4, ips_allocate_v6
        await ips_allocate_v6(ctx, {}, [])
        await ips_allocate_v4(ctx, {"shared": True}, [])
    ctx.daemon.check_fault("deploy", [primary])
    count = _first_count(cfg, ha)
    volumes: list[st.Volume | None] = [None] * count
    for mount in flytoml.mounts(cfg)[:1]:
        # deploy_first.go provisionVolumesOnFirstDeploy: one seed volume per mount, and none when
        # an unattached volume of that name exists in ANY region; machines_launchinput.go
        # launchInputForLaunch then wants one in the primary region.
        free = unattached(ctx, app, mount["source"])
        if not free and first:
            size = flytoml.gigabytes(mount.get("initial_size") or initial_size or 1)
            ctx.out(f"Creating a {size} GB volume named '{mount['source']}' for process group 'app'. "
                    f"Use 'fly vol extend' to increase its size")
            try:
                free = [new_volume(ctx, app.name, mount["source"], primary, size, unique=False)]
            except FlyError as e:
                raise FlyError(f"failed to provision seed volumes: {e}") from None
            ctx.state.save()
        elif not free:
            raise FlyError(f"creating a new machine in group 'app' requires an unattached '{mount['source']}' "
                           f"volume. Create it with `fly volume create {mount['source']}`")
        for i in range(count):
            vol = next((v for v in free if v.region == primary), None)
            if vol is None:
                raise FlyError(f"New machine in group 'app' needs an unattached volume named '{mount['source']}' "
                               f"in region '{primary}'")
            free.remove(vol)
            volumes[i] = vol
    ctx.out(f"Creating {count} new machine{'s' if count > 1 else ''} in group 'app' in region '{primary}'")
    created = []
    for i in range(count):
        try:
            m = await launch(ctx, app, primary, config, image, volumes[i])
        except FlyError as e:
            raise FlyError(f"error creating a new machine: {e}") from None
        created.append(m)
        ctx.out(f"Created machine {m.id} [app]")
    if detach:
        return
    for m in created:
        await wait_state(m, "started", wait_timeout)
        if strategy != "immediate":
            await wait_healthy(ctx, m, wait_timeout)
        ctx.out(f"Machine {m.id} [app] has state: started")


# --- scale count ------------------------------------------------------------------------------

def parse_counts(args: list[str], group: str) -> dict[str, tuple[int, bool]]:
    """-> group: (count, relative), as flyctl's parseGroupCounts."""
    def one(text: str) -> tuple[int, bool]:
        try:
            n = int(text)
        except ValueError:
            raise FlyError(f'strconv.Atoi: parsing "{text}": invalid syntax') from None
        relative = text.startswith(("+", "-"))
        if relative and n == 0:
            raise FlyError(f"invalid relative scale count: {text}")
        return n, relative

    if len(args) == 1:
        try:
            return {group: one(args[0])}
        except FlyError:
            pass
    groups = {}
    for arg in args:
        parts = arg.split("=")
        if len(parts) != 2:
            raise FlyError(f"'{arg}' is not a valid process=count option")
        groups[parts[0]] = one(parts[1])
    return groups


def converge(expected: int, current: dict[str, int], regions: list[str], max_per_region: int) -> dict[str, int]:
    """flyctl's convergeGroupCounts: add round-robin in list order, remove from the back."""
    diffs: dict[str, int] = {}
    regions = regions or list(current)
    if max_per_region >= 0:
        if len(regions) * max_per_region < expected:
            raise FlyError("the number of regions by the maximum machines per region is fewer than the expected total")
        for r in regions:
            if current.get(r, 0) > max_per_region:
                diffs[r] = max_per_region - current[r]
    diff = expected - sum(current.get(r, 0) + diffs.get(r, 0) for r in regions)
    idx = 0
    while diff > 0:
        r = regions[idx % len(regions)]
        if max_per_region < 0 or current.get(r, 0) + diffs.get(r, 0) < max_per_region:
            diffs[r] = diffs.get(r, 0) + 1
            diff -= 1
        idx += 1
    idx = -1
    while diff < 0:
        r = regions[(-idx) % len(regions)]
        if current.get(r, 0) + diffs.get(r, 0) > 0:
            diffs[r] = diffs.get(r, 0) - 1
            diff += 1
        idx -= 1
    return {r: d for r, d in diffs.items() if d}


async def scale_count(ctx: Context, flags, args):
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0")
    app = ctx.app()
    groups = parse_counts(args, flags.get("process-group") or "app")
    unknown = [g for g in groups if g != "app"]
    if unknown:
        raise FlyError(f"Attempting to scale unknown process groups [{' '.join(unknown)}] but valid names are [app].\n"
                       " Use `fly scale count COUNT --process-group=NAME` \n"
                       " or multi group syntax `fly scale count NAME1=COUNT1 NAME2=COUNT2 ...`")
    release = app.complete_release()
    if release is None:
        raise FlyError("this app has no complete releases. Run `fly deploy` to create one and rerun this command")
    machines = sorted(ctx.state.app_machines(app.name), key=lambda m: m.created_at)
    regions = [r for r in (flags.get("region") or "").split(",") if r]
    if not regions:
        regions = list(dict.fromkeys(m.region for m in machines)) or [release.config.get("primary_region")]
    count, relative = groups["app"]
    expected = max(len(machines) + count if relative else count, 0)
    current: dict[str, int] = {}
    for m in machines:
        current[m.region] = current.get(m.region, 0) + 1
    diffs = converge(expected, current, regions, flags.get("max-per-region", -1))
    if not diffs:
        ctx.out("App already scaled to desired state. No need for changes")
        return
    if machines:
        template = copy.deepcopy(machines[0].config)
        image = machines[0].image
    else:
        template = flytoml.machine_config(release.config, release.image["ref"], release.version, release.id)
        image = release.image
    template.pop("standbys", None)
    template["env"].pop("FLY_STANDBY_FOR", None)
    mount = (template.get("mounts") or [None])[0]
    size_name = flytoml.size_name(template["guest"])

    plan = []  # (region, delta, volumes to reuse, volumes to create)
    ctx.out(f"App '{app.name}' is going to be scaled according to this plan:")
    for region in [r for r in regions if r in diffs]:
        delta = diffs[region]
        reuse, create = [], 0
        if mount and delta > 0 and not flags.get("with-new-volumes"):
            reuse = [v for v in ctx.state.app_volumes(app.name) if v.name == mount["name"]
                     and v.region == region and not v.attached_machine_id][:delta]
        if mount and delta > 0:
            create = delta - len(reuse)
        plan.append((region, delta, reuse, create))
        ctx.out(f"{delta:+4d} machines for group 'app' on region '{region}' of size '{size_name}'")
        if reuse and create:
            ctx.out(f"{create:+4d} volumes and {len(reuse)} unattached volumes assigned to group 'app' in region '{region}'")
        elif reuse:
            ctx.out(f"{len(reuse):4d} unattached volumes to be assigned to group 'app' in region '{region}'")
        elif create:
            ctx.out(f"{create:+4d} volumes  for group 'app' in region '{region}'")
    if not flags.get("yes"):
        raise FlyError("--yes flag must be specified when not running interactively" if not ctx.interactive
                       else "the stand-in cannot prompt; pass --yes")
    ctx.daemon.check_fault("scale count", [r for r, d, _, _ in plan if d > 0])
    # count_machines.go: the leases come after the confirmation, on EVERY Machine of the app that
    # was listed, whatever --region says (mach.AcquireLeases(ctx, machines)), and are held until
    # the command ends (defer releaseFunc()).
    held = await lease_machines(ctx, machines)
    try:
        ctx.out("Executing scale plan")
        size_gb = max([v.size_gb for v in ctx.state.app_volumes(app.name) if mount and v.name == mount["name"]]
                      or [1])
        gate = asyncio.Semaphore(MAX_CONCURRENT_ACTIONS)

        async def grow(region: str, vol: st.Volume | None) -> None:
            async with gate:
                if mount and vol is None:
                    ctx.out(f"  Creating volume {mount['name']} region:{region} size:{size_gb}GiB")
                    vol = new_volume(ctx, app.name, mount["name"], region, size_gb, unique=False)
                    ctx.state.save()
                m = await launch(ctx, app, region, template, image, vol)
                ctx.out(f"  Created {m.id} group:app region:{region} size:{size_name}"
                        + (f" volume:{vol.id}" if vol else ""))

        async def shrink(m: st.Machine, region: str) -> None:
            async with gate:
                await _destroy(ctx, m, region, size_name)

        jobs = []
        for region, delta, reuse, create in plan:
            if delta > 0:
                jobs += [grow(region, reuse[i] if i < len(reuse) else None) for i in range(delta)]
            else:
                jobs += [shrink(m, region) for m in [m for m in machines if m.region == region][: -delta]]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        ctx.state.save()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    finally:
        release_leases(ctx, held)


async def _destroy(ctx: Context, m: st.Machine, region: str, size_name: str) -> None:
    await ctx.runtime.destroy(m, kill=True)
    ctx.out(f"  Destroyed {m.id} group:app region:{region} size:{size_name}")


COMMANDS = [
    Command(("deploy",), {**APP, **YES, "remote-only": ("bool", None), "local-only": ("bool", None),
            "ha": ("bool", None), "strategy": ("str", None), "wait-timeout": ("str", None),
            "detach": ("bool", None), "regions": ("str", None), "only-regions": ("str", None),
            "exclude-regions": ("str", None), "primary-region": ("str", None), "image": ("str", "i"),
            "dockerfile": ("str", None), "max-unavailable": ("str", None), "build-only": ("bool", None),
            "push": ("bool", None), "env": ("list", "e"), "no-public-ips": ("bool", None),
            "volume-initial-size": ("int", None), "vm-size": ("str", None), "smoke-checks": ("bool", None),
            "dns-checks": ("bool", None)}, deploy, True),
    Command(("scale", "count"), {**APP, **YES, "region": ("str", "r"), "max-per-region": ("int", None),
            "process-group": ("str", None), "with-new-volumes": ("bool", None), "from-snapshot": ("str", None),
            "vm-size": ("str", None), "env": ("list", "e")}, scale_count, True),
]
