"""Fixtures for the real Pulumi engine (see tests/kit/engine.py)."""

from __future__ import annotations

import pytest

from nats_fly_testkit.engine import copy_project, engine_environment, missing_tools, require


@pytest.fixture
def engine_env(tmp_path):
    require(missing_tools(), "the engine tests")
    return engine_environment(tmp_path)


@pytest.fixture
def project(tmp_path, engine_env):
    """make(base_stack) -> a project copy with stack `e2e` made from config/Pulumi.<base_stack>.yaml."""
    return lambda base_stack, stack="e2e": copy_project(tmp_path / "project", base_stack, stack, engine_env)
