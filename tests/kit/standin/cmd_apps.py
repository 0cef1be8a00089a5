"""flyctl apps, status, ips, secrets, regions, volumes, machine list."""
from __future__ import annotations

import random
import re
import secrets as pysecrets

from . import dotenv, zones
from . import state as st
from .cli import APP, JSON, YES, Command, Context, FlyError
from .regions import known as known_region

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


async def status(ctx: Context, flags, args):
    app = ctx.app()
    machines = ctx.state.app_machines(app.name)
    if flags.get("json"):
        ctx.json(st.status_json(app, machines))
        return
    doc = st.status_json(app, machines)
    ctx.out(f"App\n  Name     = {app.name}\n  Owner    = {app.org}\n  Hostname = {app.name}.fly.dev\n"
            f"  Platform = machines\n")
    if not doc["Machines"]:
        ctx.out("No machines are available on this app.")
        return
    ctx.out("Machines\nPROCESS\tID\tVERSION\tREGION\tSTATE\tCHECKS\tLAST UPDATED")
    for m in doc["Machines"]:
        passing = sum(c["status"] == "passing" for c in m["checks"])
        ctx.out(f"app\t{m['id']}\t{m['config']['metadata'].get('fly_release_version', '')}\t{m['region']}\t"
                f"{m['state']}\t{passing} total, {passing} passing\t{m['updated_at']}")


async def apps_create(ctx: Context, flags, args):
    name = flags.get("name") or (args[0] if args else None)
    if flags.get("generate-name"):
        name = f"{st.machine_name()}"
    if not name:
        raise FlyError("app name must be specified when not running interactively")
    org = flags.get("org") or ctx.env.get("FLY_ORG")
    if not org:
        raise FlyError("org slug must be specified when not running interactively")
    ctx.authorize_org(org)  # a deploy token cannot create apps (tokens/create.go: "a single app")
    if name in ctx.state.apps or name in ctx.state.taken:
        raise FlyError("Validation failed: Name has already been taken")
    if not NAME_RE.match(name):
        raise FlyError("Validation failed: Name can only contain lowercase letters, numbers, and dashes")
    app = st.App(name=name, org=org, id=name, created_at=st.now_iso())
    ctx.state.apps[name] = app
    ctx.state.save()
    if flags.get("json"):
        ctx.json({"ID": name, "Name": name, "Status": "pending", "Deployed": False,
                  "Hostname": f"{name}.fly.dev", "Organization": {"Slug": org, "Name": org}})
    else:
        ctx.out(f"New app created: {name}")


async def apps_destroy(ctx: Context, flags, args):
    if not args:
        raise FlyError("accepts at least 1 arg(s), received 0")
    ctx.require_yes()
    for name in args:
        app = ctx.state.apps.get(name)
        if app is None:
            raise FlyError(f'Could not find App "{name}"')
        ctx.authorize_app(app)
        for m in ctx.state.app_machines(name):
            await ctx.runtime.destroy(m, kill=True)
        for v in ctx.state.app_volumes(name):
            del ctx.state.volumes[v.id]
            ctx.daemon.forget_volume(v.id)
        del ctx.state.apps[name]
        ctx.daemon.proxy.forget(name)
        ctx.state.save()
        ctx.out(f"Destroyed app {name}")


async def apps_list(ctx: Context, flags, args):
    # An app-scoped deploy token cannot list apps (simonw/datasette.io#188: "flyctl apps list --json
    # Fails for an unscoped auth token" -- the app-scoped deploy tokens meant; the text is not shown).
    ctx.authorize_org(None)
    rows = [{"ID": a.name, "Name": a.name, "Status": st.status_json(a, ctx.state.app_machines(a.name))["Status"],
             "Deployed": a.complete_release() is not None, "Organization": {"Slug": a.org}}
            for a in ctx.state.apps.values()]
    if flags.get("json"):
        ctx.json(rows)
    else:
        ctx.out("NAME\tOWNER\tSTATUS")
        for r in rows:
            ctx.out(f"{r['Name']}\t{r['Organization']['Slug']}\t{r['Status']}")


# --- ips -------------------------------------------------------------------------------

def _ip_table(ctx: Context, ip: st.IP) -> None:
    kind = {"v4": "public (dedicated, $2/mo)", "v6": "public (dedicated)", "shared_v4": "public (shared)"}[ip.type]
    version = "v6" if ip.type == "v6" else "v4"
    ctx.out("VERSION\tIP\tTYPE\tREGION\tCREATED AT")
    ctx.out(f"{version}\t{ip.address}\t{kind}\t{ip.region or ''}\tjust now")


async def ips_list(ctx: Context, flags, args):
    app = ctx.app()
    if flags.get("json"):
        ctx.json(st.ips_json(app))
        return
    ctx.out("VERSION\tIP\tTYPE\tREGION\tCREATED AT")
    for ip in app.ips:
        ctx.out(f"{'v6' if ip.type == 'v6' else 'v4'}\t{ip.address}\t{ip.type}\t{ip.region}\t{ip.created_at}")


async def ips_allocate_v6(ctx: Context, flags, args):
    app = ctx.app()
    if flags.get("private"):
        raise FlyError("the stand-in does not implement Flycast (--private) addresses")
    words = [f"{random.randrange(0x10000):x}" for _ in range(2)]
    ip = st.IP(id="ip_" + pysecrets.token_hex(8), address=f"2a09:8280:1::{words[0]}:{words[1]}",
               type="v6", region=flags.get("region") or "global", created_at=st.now_iso())
    app.ips.append(ip)
    ctx.state.save()
    _ip_table(ctx, ip)


async def ips_allocate_v4(ctx: Context, flags, args):
    app = ctx.app()
    if flags.get("shared"):
        existing = next((ip for ip in app.ips if ip.type == "shared_v4"), None)
        ip = existing or st.IP(id="", address=f"66.241.124.{random.randrange(2, 250)}", type="shared_v4",
                               region="", created_at=st.now_iso())
        if not existing:
            app.ips.append(ip)
    else:
        if not flags.get("yes"):
            if not ctx.interactive:
                raise FlyError("yes flag must be specified when not running interactively")
            raise FlyError("the stand-in cannot prompt; pass --yes")
        ip = st.IP(id="ip_" + pysecrets.token_hex(8),
                   address=f"137.66.{random.randrange(1, 250)}.{random.randrange(2, 250)}",
                   type="v4", region=flags.get("region") or "global", created_at=st.now_iso())
        app.ips.append(ip)
    ctx.state.save()
    _ip_table(ctx, ip)


async def ips_release(ctx: Context, flags, args):
    app = ctx.app()
    for addr in args:
        match = [ip for ip in app.ips if ip.address == addr]
        if not match:
            raise FlyError(f"Could not find IP address {addr}")
        app.ips.remove(match[0])
        ctx.out(f"Released {addr} from {app.name}")
    ctx.state.save()


# --- secrets ----------------------------------------------------------------------------

def parse_dotenv(text: str) -> dict[str, str]:
    """flyctl's `secrets import` parser (dotenv.py, a port of internal/command/secrets/parser.go)."""
    try:
        return dotenv.parse(text)
    except dotenv.ParseError as e:
        raise FlyError(f"Failed to parse secrets from stdin: {e}") from None
    except dotenv.GoPanic as e:
        raise FlyError(str(e), code=2) from None


async def _apply_secrets(ctx: Context, app: st.App, flags) -> None:
    ctx.state.save()
    if flags.get("stage"):
        ctx.out("Secrets have been staged, but not set on VMs. Deploy or update machines in this app "
                "for the secrets to take effect.")
        return
    machines = ctx.state.app_machines(app.name)
    if not machines:
        ctx.out("Secrets are staged for the first deployment")
        return
    from .cmd_deploy import restart_with_secrets
    await restart_with_secrets(ctx, app, machines, detach=bool(flags.get("detach")))


async def secrets_import(ctx: Context, flags, args):
    app = ctx.app()
    values = parse_dotenv(ctx.stdin or "")
    await _update_secrets(ctx, app, values, flags)


async def _update_secrets(ctx: Context, app: st.App, values: dict, flags) -> None:
    if not values:
        raise FlyError("requires at least one SECRET=VALUE pair")
    app.secrets.update(values)
    await _apply_secrets(ctx, app, flags)


async def secrets_set(ctx: Context, flags, args):
    app = ctx.app()
    values = {}
    for pair in args:
        if "=" not in pair:
            raise FlyError(f"Secrets must be provided as NAME=VALUE pairs ({pair} is invalid)")
        key, value = pair.split("=", 1)
        if value == "-":
            if ctx.stdin is None:
                raise FlyError("Secret `-` value requires piped stdin")
            value = ctx.stdin[: 64 * 1024]
        values[key] = value
    await _update_secrets(ctx, app, values, flags)


async def secrets_unset(ctx: Context, flags, args):
    app = ctx.app()
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0")
    for key in args:
        app.secrets.pop(key, None)
    await _apply_secrets(ctx, app, flags)


async def secrets_list(ctx: Context, flags, args):
    app = ctx.app()
    rows = [{"Name": k, "Digest": pysecrets.token_hex(8), "Status": "Deployed"} for k in sorted(app.secrets)]
    if flags.get("json"):
        ctx.json(rows)
    else:
        ctx.out("NAME\tDIGEST\tSTATUS")
        for r in rows:
            ctx.out(f"{r['Name']}\t{r['Digest']}\t{r['Status']}")


# --- regions, machines, volumes ----------------------------------------------------------

REGIONS_GONE = ("This command is no longer supported; use fly scale count to scale the number of Machines "
                "in a region. See https://fly.io/docs/launch/scale-count/.")


async def regions_gone(ctx: Context, flags, args):
    raise FlyError(REGIONS_GONE)


async def regions_list(ctx: Context, flags, args):
    app = ctx.app()
    groups: dict[str, list[str]] = {}
    for m in ctx.state.app_machines(app.name):
        regions = groups.setdefault(m.process_group, [])
        if m.region not in regions:
            regions.append(m.region)
    doc = {"ProcessGroupRegions": [{"Name": g, "Regions": sorted(r)} for g, r in sorted(groups.items())]}
    if flags.get("json"):
        ctx.json(doc)
    else:
        for g in doc["ProcessGroupRegions"]:
            ctx.out(f"Regions [{g['Name']}]: {', '.join(g['Regions'])}")


async def machine_list(ctx: Context, flags, args):
    app = ctx.app()
    machines = sorted(ctx.state.app_machines(app.name), key=lambda m: m.created_at)
    if flags.get("quiet"):
        for m in machines:
            ctx.out(m.id)
    elif flags.get("json"):
        ctx.json([st.machine_json(m) for m in machines])
    else:
        ctx.out(f"{len(machines)} machines have been retrieved from app {app.name}.")
        ctx.out("ID\tNAME\tSTATE\tREGION\tIMAGE\tIP ADDRESS")
        for m in machines:
            ctx.out(f"{m.id}\t{m.name}\t{m.state}\t{m.region}\t{m.image['ref']}\t{m.private_ip}")


def _machine(ctx: Context, app: st.App, machine_id: str) -> st.Machine:
    m = ctx.state.machines.get(machine_id)
    if m is None or m.app != app.name:
        raise FlyError(f"could not get machine {machine_id}: failed to get VM {machine_id}: machine not found")
    return m


async def machine_stop(ctx: Context, flags, args):
    """Fly's stop: the Machine's stop config (fly.toml kill_signal / kill_timeout) unless --signal/--timeout
    say otherwise; the supervisor does not restart a Machine stopped this way. Fly returns once the stop
    is accepted; here the call returns once the Machine is stopped (callers poll `machine list` either way)."""
    app = ctx.app()
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0")
    machines = [_machine(ctx, app, machine_id) for machine_id in args]
    from .cmd_deploy import lease_machines, release_leases
    held = await lease_machines(ctx, machines)  # machine/stop.go: mach.AcquireLeases before stopping
    try:
        for m in machines:
            ctx.out(f"Sending kill signal to machine {m.id}...")
            if m.state in ("started", "starting"):
                await ctx.runtime.stop(m, sig=flags.get("signal"), timeout=flags.get("timeout"))
                ctx.state.save()
            ctx.out(f"{m.id} has been successfully stopped")
    finally:
        release_leases(ctx, held)


async def machine_destroy(ctx: Context, flags, args):
    """Fly refuses to destroy a Machine that is not stopped unless --force (which kills it)."""
    app = ctx.app()
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0")
    from .cmd_deploy import lease_machines, release_leases
    for machine_id in args:
        m = _machine(ctx, app, machine_id)
        held = await lease_machines(ctx, [m])  # the Machine is leased while it is destroyed (fly.md section 7)
        try:
            if m.state not in ("stopped", "created", "failed", "suspended") and not flags.get("force"):
                raise FlyError(f"machine {m.id} is in a {m.state} state and cannot be destroyed since it is not "
                               f"stopped, either stop first or use --force flag")
            ctx.out(f"machine {m.id} was found and is currently in {m.state} state, attempting to destroy...")
            await ctx.runtime.destroy(m, kill=True)
            ctx.state.save()
            ctx.out(f"{m.id} has been destroyed")
        finally:
            release_leases(ctx, held)


def new_volume(ctx: Context, app: str, name: str, region: str, size: int, unique: bool) -> st.Volume:
    """The API's volume create: a zone of the region (zones.py), unique among the app's volumes of
    that name in the region when asked, else "failed to create volume: aborted: no capacity"."""
    siblings = [v for v in ctx.state.app_volumes(app) if v.name == name and v.region == region]
    zone = zones.place(ctx.daemon.settings, region, siblings, unique)
    if zone is None:
        raise FlyError(zones.NO_CAPACITY)
    vol = st.Volume(id="vol_" + pysecrets.token_hex(8).replace("0", "r")[:16], name=name, app=app,
                    region=region, size_gb=size, created_at=st.now_iso(), zone=zone)
    ctx.state.volumes[vol.id] = vol
    return vol


async def volumes_create(ctx: Context, flags, args):
    app = ctx.app()
    if not args:
        raise FlyError("accepts 1 arg(s), received 0")
    name, region = args[0], flags.get("region") or ctx.env.get("FLY_REGION")
    if not region:
        raise FlyError("region code must be specified when not running interactively")
    if not known_region(region):
        raise FlyError(f"region {region} not found")
    if not re.fullmatch(r"[a-z0-9_]{1,30}", name):
        raise FlyError("Volume name must consist of lowercase letters, numbers and underscores, 30 characters at most")
    # volumes/create.go confirmVolumeCreate: no question with --yes, with --count > 1, or when a
    # volume of that name exists; --size defaults to 3; --require-unique-zone defaults to true.
    if flags.get("count", 1) <= 1 and not any(v.name == name for v in ctx.state.app_volumes(app.name)):
        ctx.require_yes()
    unique = flags.get("require-unique-zone", True)
    for _ in range(flags.get("count", 1)):  # one create request each, printed as made; an error stops the rest
        v = new_volume(ctx, app.name, name, region, flags.get("size", 3), unique)
        ctx.state.save()
        if flags.get("json"):
            ctx.json(st.volume_json(v))  # render.JSON per volume: --count 2 prints two documents
            continue
        ctx.out(f"                  ID: {v.id}\n                Name: {v.name}\n                 App: {app.name}\n"
                f"              Region: {v.region}\n                Zone: {v.zone}\n             Size GB: {v.size_gb}\n"
                f"           Encrypted: true\n          Created at: {v.created_at}\n  Snapshot retention: 5")


async def volumes_list(ctx: Context, flags, args):
    app = ctx.app()
    vols = sorted(ctx.state.app_volumes(app.name), key=lambda v: v.created_at)
    if flags.get("json"):
        ctx.json([st.volume_json(v) for v in vols])
        return
    ctx.out("ID\tSTATE\tNAME\tSIZE\tREGION\tZONE\tENCRYPTED\tATTACHED VM\tCREATED AT")
    for v in vols:
        ctx.out(f"{v.id}\t{v.state}\t{v.name}\t{v.size_gb}GB\t{v.region}\t{v.zone}\ttrue\t"
                f"{v.attached_machine_id or ''}\t{v.created_at}")


async def volumes_destroy(ctx: Context, flags, args):
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0")
    ctx.require_yes()
    for vol_id in args:
        vol = ctx.state.volumes.get(vol_id)
        if vol is None:
            raise FlyError(f"failed destroying volume: failed to destroy volume {vol_id}: not_found: volume not found")
        if vol.attached_machine_id and vol.attached_machine_id in ctx.state.machines:
            raise FlyError(f"failed destroying volume: failed to destroy volume {vol_id}: failed_precondition: "
                           f"volume is currently bound to machine: {vol.attached_machine_id}")
        del ctx.state.volumes[vol_id]
        ctx.daemon.forget_volume(vol_id)
        ctx.state.save()
        ctx.out(f"Destroyed volume ID: {vol_id} name: {vol.name}")


# --- tokens -------------------------------------------------------------------------------------

def _print_token(ctx: Context, flags, token: str) -> None:
    if flags.get("json"):
        ctx.json({"token": token})
    else:
        ctx.out(token)


async def tokens_create_deploy(ctx: Context, flags, args):
    """internal/command/tokens/create.go runDeploy: the app is looked up by name first (so a token
    for an app not created yet cannot be made: "failed retrieving app %s: %w", the API's "app not
    found", fly-go flaps/flaps_apps.go); the token is "limited to managing a single app"."""
    try:
        name = ctx.app_name()
    except FlyError:
        name = ""
    app = ctx.state.apps.get(name)
    if app is None:
        raise FlyError(f"failed retrieving app {name}: app not found")
    try:
        ctx.authorize_app(app)
    except FlyError as e:
        raise FlyError(f"failed retrieving app {name}: {e}") from None
    _print_token(ctx, flags, ctx.daemon.make_token("deploy", app=name))


async def tokens_create_org(ctx: Context, flags, args):
    """runOrg: an org deploy token ("limited to managing a single org and its resources"). Without
    an org and a terminal: runOrg's "failed retrieving org %w" around prompt.go's
    errOrgSlugRequired (the stand-in's composition of the two real texts)."""
    org = flags.get("org") or ctx.env.get("FLY_ORG") or (args[0] if args else None)
    if not org:
        raise FlyError("failed retrieving org org slug must be specified when not running interactively")
    ctx.authorize_org(org)
    _print_token(ctx, flags, ctx.daemon.make_token("org", org=org))


async def version(ctx: Context, flags, args):
    ctx.out("flyctl v0.3.standin linux/amd64 (the nats-fly test stand-in)")


_MACHINE = {"machines": "machine", "m": "machine", "ls": "list", "remove": "destroy", "rm": "destroy"}
_VOLUME = {"volume": "volumes", "vol": "volumes", "ls": "list", "delete": "destroy", "rm": "destroy"}
_APPS = {"app": "apps", "delete": "destroy", "remove": "destroy", "rm": "destroy", "ls": "list"}

COMMANDS = [
    Command(("status",), {**APP, **JSON, "all": ("bool", None)}, status, False),
    Command(("apps", "create"), {**JSON, **YES, "org": ("str", "o"), "name": ("str", None),
            "generate-name": ("bool", None), "network": ("str", None), "save": ("bool", None)},
            apps_create, True, _APPS),
    Command(("apps", "destroy"), {**YES}, apps_destroy, True, _APPS),
    Command(("apps", "list"), {**JSON, "org": ("str", "o")}, apps_list, False, _APPS),
    Command(("ips", "list"), {**APP, **JSON}, ips_list, False),
    Command(("ips", "allocate-v6"), {**APP, **JSON, "private": ("bool", None), "region": ("str", "r"),
            "org": ("str", "o"), "network": ("str", None)}, ips_allocate_v6, True),
    Command(("ips", "allocate-v4"), {**APP, **JSON, **YES, "shared": ("bool", None),
            "region": ("str", "r")}, ips_allocate_v4, True),
    Command(("ips", "release"), {**APP}, ips_release, True),
    Command(("secrets", "import"), {**APP, "stage": ("bool", None), "detach": ("bool", None)}, secrets_import, True),
    Command(("secrets", "set"), {**APP, "stage": ("bool", None), "detach": ("bool", None)}, secrets_set, True),
    Command(("secrets", "unset"), {**APP, "stage": ("bool", None), "detach": ("bool", None)}, secrets_unset, True),
    Command(("secrets", "list"), {**APP, **JSON}, secrets_list, False),
    *[Command(("regions", verb), {**APP, **JSON, **YES, "group": ("str", None)}, regions_gone, True)
      for verb in ("add", "remove", "set", "backup")],
    Command(("regions", "list"), {**APP, **JSON}, regions_list, False),
    Command(("machine", "list"), {**APP, **JSON, "quiet": ("bool", "q")}, machine_list, False, _MACHINE),
    Command(("machine", "stop"), {**APP, "signal": ("str", "s"), "timeout": ("int", None),
            "wait-timeout": ("str", "w")}, machine_stop, True, _MACHINE),
    Command(("machine", "destroy"), {**APP, "force": ("bool", "f"), "image": ("str", None)},
            machine_destroy, True, _MACHINE),
    Command(("volumes", "create"), {**APP, **JSON, **YES, "region": ("str", "r"), "size": ("int", "s"),
            "count": ("int", "n"), "require-unique-zone": ("bool", None), "snapshot-retention": ("int", None),
            "no-encryption": ("bool", None)}, volumes_create, True, _VOLUME),
    Command(("volumes", "list"), {**APP, **JSON, "all": ("bool", None)}, volumes_list, False, _VOLUME),
    Command(("volumes", "destroy"), {**APP, **YES}, volumes_destroy, True, _VOLUME),
    Command(("tokens", "create", "deploy"), {**APP, **JSON, "name": ("str", "n"), "expiry": ("str", "x")},
            tokens_create_deploy, True),
    Command(("tokens", "create", "org"), {**JSON, "org": ("str", "o"), "name": ("str", "n"),
            "expiry": ("str", "x")}, tokens_create_org, True),
    Command(("version",), {**JSON}, version, False),
]
