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
from .cli import APP, YES, CAPACITY, Command, Context, FlyError
from .cmd_apps import new_volume

STANDARD_PORTS = {(80, ("http",)), (443, ("http", "tls")), (443, ("tls", "http"))}


# --- launching and replacing one Machine ---------------------------------------------------

def launch(ctx: Context, app: st.App, region: str, config: dict, image: dict,
           volume: st.Volume | None = None) -> st.Machine:
    """Create a Machine; like Fly's Launch it returns while the Machine is still booting."""
    address = ctx.daemon.network.allocate(region)
    config = copy.deepcopy(config)
    m = st.Machine(id=ctx.daemon.new_machine_id(), name=st.machine_name(), app=app.name, region=region,
                   private_ip=address.v6, private_ipv4=address.v4, config=config, image=image,
                   secrets=dict(app.secrets))
    if config.get("mounts"):
        if volume is None:
            raise FlyError("Launching the machine requires a volume but there is no volume to attach or create")
        config["mounts"] = [{**config["mounts"][0], "volume": volume.id, "size_gb": volume.size_gb}]
        volume.attached_machine_id = m.id
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


async def update(ctx: Context, m: st.Machine, config: dict, image: dict, secrets: dict) -> None:
    """Fly's in-place Machine update: stop it gracefully, swap config and image, start it."""
    m.state = "replacing"
    m.event("update", "replacing", source="user")
    await ctx.runtime.stop(m)
    mounts = m.config.get("mounts", [])
    m.config = copy.deepcopy(config)
    if mounts and m.config.get("mounts"):
        m.config["mounts"] = [{**m.config["mounts"][0], "volume": mounts[0]["volume"],
                               "size_gb": mounts[0].get("size_gb", 1)}]
    m.image, m.secrets, m.instance_id = image, dict(secrets), st.ulid()
    await ctx.runtime.start(m)
    ctx.state.save()


def batch_size(value, count: int) -> int:
    value = float(value)
    return max(1, int(value) if value >= 1 else math.floor(count * value))


async def roll(ctx: Context, app: st.App, machines: list[st.Machine], config: dict, image: dict,
               strategy: str, wait_timeout: float, max_unavailable) -> None:
    ctx.out(f"Updating existing machines in '{app.name}' with {strategy} strategy")
    total = len(machines)
    step = total if strategy == "immediate" else batch_size(max_unavailable, total)

    async def one(i: int, m: st.Machine) -> None:
        ctx.out(f"  [{i}/{total}] Updating {m.id} [app]")
        await update(ctx, m, config, image, app.secrets)
        if strategy != "immediate":
            await wait_state(m, "started", wait_timeout)
            ctx.out(f"  [{i}/{total}] Checking health of machine {m.id}")
            await wait_healthy(ctx, m, wait_timeout)
        ctx.out(f"  [{i}/{total}] Machine {m.id} is now in a good state")

    for start in range(0, total, step):
        await asyncio.gather(*(one(start + k + 1, m) for k, m in enumerate(machines[start:start + step])))
    ctx.out(f"Finished deploying")


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

    async with ctx.daemon.lease(app.name):
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
                                          app.name, label, ctx.daemon.nats_version)
        except images.BuildError as e:
            raise FlyError(f"failed to fetch an image or build from source: {e}") from None
        ctx.out(f"--> Building image done\nimage: {img.ref}\nimage size: 21 MB\n")
        image = asdict(img)
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
            existing = [m for m in ctx.state.app_machines(app.name) if m.process_group == "app"]
            if existing:
                only = set(filter(None, (flags.get("regions") or flags.get("only-regions") or "").split(",")))
                skip = set(filter(None, (flags.get("exclude-regions") or "").split(",")))
                chosen = [m for m in sorted(existing, key=lambda m: m.created_at)
                          if (not only or m.region in only) and m.region not in skip]
                await roll(ctx, app, chosen, config, image, strategy, wait_timeout, max_unavailable)
            else:
                await first_deploy(ctx, app, cfg, config, image, primary, strategy, wait_timeout,
                                   ha=flags.get("ha", True), detach=flags.get("detach", False),
                                   initial_size=flags.get("volume-initial-size"))
    ctx.out(f"\nVisit your newly deployed app at https://{app.name}.fly.dev/")


async def first_deploy(ctx: Context, app: st.App, cfg: dict, config: dict, image: dict, primary: str,
                       strategy: str, wait_timeout: float, ha: bool, detach: bool, initial_size) -> None:
    if cfg.get("services") and not app.ips and not _dedicated_ports(cfg):
        from .cmd_apps import ips_allocate_v4, ips_allocate_v6
        await ips_allocate_v6(ctx, {}, [])
        await ips_allocate_v4(ctx, {"shared": True}, [])
    ctx.daemon.check_fault("deploy", [primary])
    count = _first_count(cfg, ha)
    volumes: list[st.Volume | None] = [None] * count
    for mount in flytoml.mounts(cfg)[:1]:
        free = [v for v in ctx.state.app_volumes(app.name)
                if v.name == mount["source"] and v.region == primary and not v.attached_machine_id]
        for i in range(count):
            if free:
                volumes[i] = free.pop(0)
                continue
            size = flytoml.gigabytes(mount.get("initial_size") or initial_size or 1)
            ctx.out(f"Creating a {size} GB volume named '{mount['source']}' for process group 'app'. "
                    f"Use 'fly vol extend' to increase its size")
            volumes[i] = new_volume(ctx, app.name, mount["source"], primary, size)
    ctx.out(f"Creating {count} new machine{'s' if count > 1 else ''} in group 'app' in region '{primary}'")
    created = [launch(ctx, app, primary, config, image, volumes[i]) for i in range(count)]
    for m in created:
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
    async with ctx.daemon.lease(app.name):
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
        ctx.out("Executing scale plan")
        size_gb = max([v.size_gb for v in ctx.state.app_volumes(app.name) if mount and v.name == mount["name"]]
                      or [1])
        jobs = []
        for region, delta, reuse, create in plan:
            if delta > 0:
                for i in range(delta):
                    vol = None
                    if mount:
                        if i < len(reuse):
                            vol = reuse[i]
                        else:
                            ctx.out(f"  Creating volume {mount['name']} region:{region} size:{size_gb}GiB")
                            vol = new_volume(ctx, app.name, mount["name"], region, size_gb)
                    m = launch(ctx, app, region, template, image, vol)
                    ctx.out(f"  Created {m.id} group:app region:{region} size:{size_name}"
                            + (f" volume:{vol.id}" if vol else ""))
            else:
                victims = [m for m in machines if m.region == region][: -delta]
                for m in victims:
                    jobs.append(_destroy(ctx, m, region, size_name))
        await asyncio.gather(*jobs)
        ctx.state.save()


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
