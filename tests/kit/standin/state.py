"""What Fly's API knows (apps, releases, Machines, volumes, IPs, secrets), kept on
disk as JSON after every change, and rendered in flyctl's JSON shapes."""
from __future__ import annotations

import json
import os
import random
import secrets
import string
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import flytoml

ADJECTIVES = ["autumn", "hidden", "bitter", "misty", "silent", "empty", "dry", "dark", "summer",
              "icy", "delicate", "quiet", "white", "cool", "spring", "winter", "patient", "twilight"]
NOUNS = ["waterfall", "river", "breeze", "moon", "rain", "wind", "sea", "morning", "snow", "lake",
         "sunset", "pine", "shadow", "leaf", "dawn", "glitter", "forest", "hill", "cloud", "meadow"]


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_id() -> str:
    return secrets.token_hex(7)


def ulid() -> str:
    return "01" + "".join(random.choices(string.digits + "ABCDEFGHJKMNPQRSTVWXYZ", k=24))


def machine_name() -> str:
    return f"{random.choice(ADJECTIVES)}-{random.choice(NOUNS)}-{random.randint(1000, 9999)}"


@dataclass
class Volume:
    id: str
    name: str
    app: str
    region: str
    size_gb: int
    created_at: str
    zone: str
    attached_machine_id: str | None = None
    state: str = "created"


@dataclass
class IP:
    id: str
    address: str
    type: str  # v4 | v6 | shared_v4
    region: str
    created_at: str


@dataclass
class Release:
    version: int
    id: str
    status: str  # running | complete | failed
    image: dict
    config: dict
    created_at: str


@dataclass
class Machine:
    id: str
    name: str
    app: str
    region: str
    private_ip: str
    private_ipv4: str
    config: dict
    image: dict
    secrets: dict
    instance_id: str = field(default_factory=ulid)
    state: str = "created"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    checks: dict = field(default_factory=dict)  # name -> {status, output, updated_at}
    exit_code: int | None = None
    events: list = field(default_factory=list)  # newest first, as Fly lists them

    def event(self, kind: str, status: str, source: str = "flyd", **request) -> None:
        self.events.insert(0, {"type": kind, "status": status, "source": source,
                               "timestamp": int(time.time() * 1000), **({"request": request} if request else {})})
        del self.events[20:]

    @property
    def kill_signal(self) -> str:
        return self.config.get("stop_config", {}).get("signal", "SIGINT")

    @property
    def kill_timeout(self) -> float:
        return flytoml.seconds(self.config.get("stop_config", {}).get("timeout", "5s"))

    @property
    def process_group(self) -> str:
        return self.config.get("metadata", {}).get("fly_process_group", "app")

    @property
    def size(self) -> str:
        return flytoml.size_name(self.config["guest"])


@dataclass
class App:
    name: str
    org: str
    id: str
    created_at: str
    secrets: dict = field(default_factory=dict)
    releases: list = field(default_factory=list)  # of Release
    ips: list = field(default_factory=list)  # of IP

    def complete_release(self) -> Release | None:
        done = [r for r in self.releases if r.status == "complete"]
        return done[-1] if done else None


@dataclass
class State:
    path: Path
    apps: dict = field(default_factory=dict)
    machines: dict = field(default_factory=dict)
    volumes: dict = field(default_factory=dict)
    taken: set = field(default_factory=set)  # names held by other Fly customers

    def save(self) -> None:
        doc = {"apps": {k: asdict(v) for k, v in self.apps.items()},
               "machines": {k: asdict(v) for k, v in self.machines.items()},
               "volumes": {k: asdict(v) for k, v in self.volumes.items()},
               "taken": sorted(self.taken)}
        for app in doc["apps"].values():
            app["secrets"] = sorted(app["secrets"])  # names only on disk
        for m in doc["machines"].values():
            m["secrets"] = sorted(m["secrets"])
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)

    def app_machines(self, app: str) -> list[Machine]:
        return [m for m in self.machines.values() if m.app == app and m.state != "destroyed"]

    def app_volumes(self, app: str) -> list[Volume]:
        return [v for v in self.volumes.values() if v.app == app]


# --- flyctl JSON shapes --------------------------------------------------------------

def machine_json(m: Machine) -> dict:
    """fly-go Machine: snake_case keys (`fly machine list --json`)."""
    repo, _, tag = m.image["ref"].partition(":")
    registry, _, repository = repo.partition("/")
    return {
        "id": m.id, "name": m.name, "state": m.state, "region": m.region,
        "image_ref": {"registry": registry, "repository": repository, "tag": tag,
                      "digest": m.image["digest"], "labels": {}},
        "instance_id": m.instance_id, "private_ip": m.private_ip,
        "created_at": m.created_at, "updated_at": m.updated_at,
        "config": m.config, "events": m.events,
        "checks": [{"name": n, **c} for n, c in sorted(m.checks.items())],
        "host_status": "ok", "incomplete_config": None,
    }


def status_json(app: App, machines: list[Machine]) -> dict:
    """`fly status --json`: PascalCase top level, flyctl-managed Machines by id descending."""
    release = app.complete_release()
    managed = sorted((m for m in machines if m.config.get("metadata", {}).get("fly_platform_version") == "v2"
                      and m.state not in ("destroyed", "destroying")), key=lambda m: m.id, reverse=True)
    if not app.releases:
        status = "pending"
    elif managed and all(m.state in ("stopped", "suspended") for m in managed):
        status = "suspended"
    else:
        status = "deployed"
    return {
        "ID": app.name, "Name": app.name, "Deployed": release is not None, "Status": status,
        "Hostname": f"{app.name}.fly.dev", "Version": app.releases[-1].version if app.releases else 0,
        "AppURL": f"https://{app.name}.fly.dev", "PlatformVersion": "machines",
        "Organization": {"ID": app.org, "InternalNumericID": str(abs(hash(app.org)) % 10**6),
                         "Name": app.org, "Slug": app.org, "RawSlug": app.org, "PaidPlan": True},
        "Machines": [machine_json(m) for m in managed],
    }


def ip_json(ip: IP) -> dict:
    return {"ID": ip.id, "Address": ip.address, "Type": ip.type, "Region": ip.region,
            "CreatedAt": ip.created_at, "ServiceName": "", "Network": None}


def ips_json(app: App) -> list[dict]:
    own = [ip_json(ip) for ip in app.ips if ip.type != "shared_v4"]
    shared = [ip_json(IP("", ip.address, "shared_v4", "", ip.created_at)) for ip in app.ips if ip.type == "shared_v4"]
    return own + shared


def volume_json(v: Volume) -> dict:
    return {"id": v.id, "name": v.name, "state": v.state, "size_gb": v.size_gb, "region": v.region,
            "zone": v.zone, "encrypted": True, "attached_machine_id": v.attached_machine_id,
            "attached_alloc_id": None, "created_at": v.created_at, "blocks": 0, "block_size": 4096,
            "blocks_free": 0, "blocks_avail": 0, "fstype": "ext4", "snapshot_retention": 5,
            "auto_backup_enabled": True, "host_dedication_key": "", "host_status": "ok"}
