"""Shared fixtures. The micro base model is built once per test session in a private OMLKIT_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def omlkit_home(tmp_path_factory) -> Path:
    """A session-wide OMLKIT_HOME (reuses $OMLKIT_TEST_HOME when set, to keep builds across runs)."""
    home = Path(os.environ.get("OMLKIT_TEST_HOME") or tmp_path_factory.mktemp("omlkit_home"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["OMLKIT_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def micro_model(omlkit_home) -> Path:
    """Path of the embedded ``micro`` base model (built on first use; well under a minute)."""
    from omlkit.models.embedded import ensure_base_model

    return ensure_base_model("micro", progress=False)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests use tiny models: one intra-op thread is as fast, and far faster on a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
