"""The image's build context: the static files from nats/ plus the rendered nats.conf
and fly.toml, with one content hash that tells when a deploy must run again."""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path

from ..config.settings import Settings
from . import flytoml, natsconf

STATIC_FILES = ("Dockerfile", "entrypoint.sh")
EXECUTABLE = {"entrypoint.sh"}


def image_file(name: str) -> str:
    """Read one of the image's static files, installed (package data) or from a checkout."""
    try:
        return resources.files("nats_fly.image").joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return (Path(__file__).resolve().parents[2] / "nats" / name).read_text()  # a checkout: components/render/


VERSION_MARK = "{natsVersion}"


def dockerfile(s: Settings) -> str:
    """nats/Dockerfile with the stack's natsVersion as the image tag: a new version is a new build context,
    so its hash changes and the deploy rolls."""
    template = image_file("Dockerfile")
    assert template.count(VERSION_MARK) == 1, "nats/Dockerfile names {natsVersion} once, in FROM"
    return template.replace(VERSION_MARK, s.nats_version)


def build_context(s: Settings) -> dict[str, str]:
    files = {name: image_file(name) for name in STATIC_FILES}
    files["Dockerfile"] = dockerfile(s)
    files["nats.conf"] = natsconf.render(natsconf.fly_conf(s))
    files["fly.toml"] = flytoml.render(flytoml.fly_toml(s))
    return files


def read(folder: str | os.PathLike) -> dict[str, str]:
    """A build context folder as written by `write` (or `nats-fly render`)."""
    names = [*STATIC_FILES, "nats.conf", "fly.toml"]
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a build context: {', '.join(missing)} missing")
    return {name: (Path(folder) / name).read_text() for name in names}


def to_stdin(files: dict[str, str]) -> str:
    """The context as the deploy reads it on stdin (see from_stdin)."""
    return json.dumps({"files": files}, sort_keys=True)


def from_stdin(text: str) -> dict[str, str]:
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("stdin is not a build context ({\"files\": {name: text}})") from None
    if not isinstance(files, dict) or not all(isinstance(v, str) and "/" not in k for k, v in files.items()):
        raise ValueError("stdin is not a build context ({\"files\": {name: text}})")
    return files


def write(files: dict[str, str], out_dir: str | os.PathLike) -> Path:
    """Write the context into out_dir, replacing what a previous render left there."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file() and stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o755 if name in EXECUTABLE else 0o644)
        os.replace(tmp, out / name)
    return out
