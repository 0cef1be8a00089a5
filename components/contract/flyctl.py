"""Every flyctl command line the library runs, built here and nowhere else.

Each function returns shell text for a `pulumi_command.local.Command`. Arguments
are assembled as argv lists and quoted with shlex, never pasted. The Fly token is
not handled here at all: flyctl reads FLY_API_TOKEN from the ambient environment,
which stays fresh for deletes that run with a Command's stored inputs.
"""

from __future__ import annotations

import base64
import shlex
from typing import Mapping

FLYCTL = "flyctl"
DEPLOY_WAIT = "5m"


def argv(*words: str, app: str | None = None, yes: bool = False, json: bool = False) -> list[str]:
    args = [FLYCTL, *words]
    if app is not None:
        args += ["--app", app]
    if json:
        args.append("--json")
    if yes:
        args.append("--yes")
    return args


def sh(args: list[str]) -> str:
    return shlex.join(args)


def status(app: str) -> list[str]:
    return argv("status", app=app, json=True)


def ensure_app(app: str, org: str) -> str:
    """Adopt the app when our token can see it; create it otherwise.
    `apps create` fails on any existing name, so look first."""
    return f"{sh(status(app))} >/dev/null 2>&1 || {sh(argv('apps', 'create', app, '--org', org))}"


def destroy_app(app: str) -> str:
    """Destroy the app; one that is already gone counts as destroyed."""
    destroy = sh(argv("apps", "destroy", app, yes=True))
    return (f"out=$({destroy} 2>&1) || case \"$out\" in *'Could not find App'*) ;; "
            f"*) printf '%s\\n' \"$out\" >&2; exit 1 ;; esac")


def ensure_ips(app: str, ipv4: str) -> str:
    """Allocate the public IPs raw TCP needs (a non-interactive first deploy allocates
    none), each only when the app lacks one of its type: allocations are not idempotent."""
    wanted = [("v6", argv("ips", "allocate-v6", app=app))]
    if ipv4 == "shared":
        wanted.append(("shared_v4", argv("ips", "allocate-v4", "--shared", app=app)))
    elif ipv4 == "dedicated":
        wanted.append(("v4", argv("ips", "allocate-v4", app=app, yes=True)))
    lines = ["set -e", f"ips=$({sh(argv('ips', 'list', app=app, json=True))})"]
    for ip_type, allocate in wanted:
        lines.append(f"printf '%s' \"$ips\" | grep -q '\"Type\": *\"{ip_type}\"' || {sh(allocate)}")
    return "\n".join(lines)


def import_secrets(app: str) -> str:
    """Stage secrets read from stdin; the next deploy applies them."""
    return sh(argv("secrets", "import", "--stage", app=app))


SECRET_SUFFIX = "_B64"  # the entrypoint decodes NAME_B64 into NAME


def secrets_text(values: Mapping[str, str]) -> str:
    """NAME_B64=VALUE lines for `flyctl secrets import`, each value base64 (UTF-8); the entrypoint
    decodes them (DESIGN.md: Secrets through flyctl's parser)."""
    return "".join(f"{name}{SECRET_SUFFIX}={base64.b64encode(values[name].encode()).decode()}\n"
                   for name in sorted(values))


def deploy_argv(app: str, strategy: str) -> list[str]:
    """Deploy the build context in the working directory. --ha=false: the first deploy
    places one Machine in primary_region, and the regions scale from there."""
    return argv("deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false",
                "--wait-timeout", DEPLOY_WAIT, "--strategy", strategy, app=app, yes=True)






def scale_argv(app: str, region: str, count: int) -> list[str]:
    """Fly has no `regions add` for Machines apps: a count is one call per region."""
    return argv("scale", "count", str(count), "--region", region, app=app, yes=True)


def volumes_list(app: str) -> list[str]:
    return argv("volumes", "list", app=app, json=True)


def volumes_create(app: str, name: str, region: str, size_gb: int) -> list[str]:
    return argv("volumes", "create", name, "--region", region, "--size", str(size_gb), app=app,
                json=True, yes=True)


def volumes_destroy(app: str, volume_id: str) -> list[str]:
    return argv("volumes", "destroy", volume_id, app=app, yes=True)



def machine_list(app: str) -> list[str]:
    return argv("machine", "list", app=app, json=True)


def machine_stop(app: str, machine_id: str) -> list[str]:
    """Stop with the Machine's own stop config (fly.toml kill_signal, kill_timeout): lame duck for nats-server."""
    return argv("machine", "stop", machine_id, app=app)


def machine_destroy(app: str, machine_id: str) -> list[str]:
    """--force: destroy even if it is not stopped yet (flyctl refuses a started Machine without it)."""
    return argv("machine", "destroy", machine_id, "--force", app=app)


def tls_marker_cert(app: str) -> str:
    """A self-signed certificate and key on stdout. It only lets nats-server advertise
    TLS as available to TLS-first clients behind Fly's tls handler, which terminates TLS."""
    missing = ("nats-fly: openssl is not on PATH; it makes the TLS marker certificate "
               "(install it: apt-get install openssl, brew install openssl)")
    return (f"command -v openssl >/dev/null 2>&1 || {{ echo {shlex.quote(missing)} >&2; exit 127; }}\n"
            + sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-days", "3650", "-subj", f"/CN={app}.fly.dev",
                  "-keyout", "/dev/stdout", "-out", "/dev/stdout"]))


