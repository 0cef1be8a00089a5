"""A wheel built from the repo imports as nats_fly and finds the image files, outside the checkout, and ships
the provider plugin as the console script `pulumi-resource-nats-fly` (no pulumi-plugin.json: with one, the
engine would try to download nats-fly from get.pulumi.com)."""

import shutil
import subprocess
import sys
import venv
import zipfile

from nats_fly_testkit.support import REPO


def test_wheel_ships_the_library_and_the_image_files(tmp_path):
    # Build from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    for name in ("components", "nats"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(source)], check=True, timeout=300, cwd=tmp_path)
    (wheel,) = dist.glob("nats_fly-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {f"nats_fly/{path.relative_to(REPO / 'components')}" for path in (REPO / "components").rglob("*.py")}
    assert modules <= set(names), f"left out of the wheel: {sorted(modules - set(names))}"
    assert {"nats_fly/image/Dockerfile", "nats_fly/image/entrypoint.sh"} <= set(names)
    assert not any(n.startswith("nats/") for n in names), "a top-level nats package would shadow nats-py"
    assert not any(n.endswith("pulumi-plugin.json") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pulumi-resource-nats-fly = nats_fly.provider:main" in entry_points, entry_points

    # Install into a fresh venv that sees this venv's packages (pulumi, nats-py) but not the checkout.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    python = env_dir / "bin" / "python"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    probe = ("import nats_fly, nats, nats_fly.render.buildctx as b, nats_fly.cluster;"
             "print(nats_fly.__file__); print(nats.__file__);"
             "print(b.image_file('Dockerfile').splitlines()[1])")
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{target}:{site}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    module, nats_module, from_line = result.stdout.splitlines()
    assert module.startswith(str(target)) and str(REPO) not in module
    assert "site-packages/nats/" in nats_module
    assert from_line.startswith("FROM nats:") and from_line.endswith("-alpine")
