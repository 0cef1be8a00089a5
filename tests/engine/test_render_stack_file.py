"""`nats-fly render` on a stack file whose secrets the real CLI wrote, as the README's Fly quickstart
sets them: a `secure:` value, and a map of them (`--path userPasswords.app`)."""

from __future__ import annotations

import subprocess
import sys

import yaml


def test_render_reads_secrets_set_by_the_cli(project, tmp_path):
    stack = project("prod", stack="prod")
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin="render-sys-password-1")
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin="render-app-password-1")
    written = yaml.safe_load((stack.root / "config" / "Pulumi.prod.yaml").read_text())["config"]
    assert set(written["nats-fly:userPasswords"]["app"]) == {"secure"}  # what the CLI writes for --path
    out = tmp_path / "context"
    result = subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", "prod", "--out", str(out),
                             "--project-dir", str(stack.root)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "entrypoint.sh", "fly.toml", "nats.conf"]
    for secret in ("render-sys-password-1", "render-app-password-1"):
        assert all(secret not in p.read_text() for p in out.iterdir())
    # A value set in plain text next to them is still refused, without showing it.
    stack.pulumi("config", "set", "tlsCert", "plain-cert-text")
    refused = subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", "prod", "--out", str(out),
                              "--project-dir", str(stack.root)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "nats-fly:tlsCert: given in plain text" in refused.stderr
    assert "plain-cert-text" not in refused.stderr
