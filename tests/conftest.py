"""Shared fixtures: composing the Hydra tree, tiny batches, the read-only shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

# Sleeping instead of spinning OpenMP threads: tens of times faster on shared CI cores (see
# zoo/train.py); it must be set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def compose_train(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The ``train`` config with overrides, as ``python -m zoo.train`` would compose it."""
    with initialize_config_module("configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def config_options(group: str) -> list[str]:
    """The option names of a config group (yaml files in its folder)."""
    return sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared data folder {SHARED} is absent")
    return SHARED
