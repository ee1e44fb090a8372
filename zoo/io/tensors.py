"""Tensors in and out of modules: every tensor of a safetensors folder, and a strict copy into a
module that names what is missing, unexpected or mis-shaped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class InitError(ValueError):
    """Checkpoint tensors do not fit the model part they are loaded into."""


def load_checked(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    source: str,
    may_be_missing: tuple[str, ...] = (),
    assign: bool = False,
) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers of the same names (``assign``:
    make them the module's tensors, e.g. for a module built on the meta device).

    Raises :class:`InitError` listing tensors the module lacks, tensors of the wrong shape and
    module tensors the source lacks (except names starting with ``may_be_missing``).
    """
    own = module.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    mis_shaped = sorted(
        f"{k} {tuple(tensors[k].shape)} (expected {tuple(own[k].shape)})"
        for k in set(tensors) & set(own)
        if tensors[k].shape != own[k].shape
    )
    missing = sorted(k for k in set(own) - set(tensors) if not k.startswith(may_be_missing))
    problems = [
        f"{label}: {names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)})"
        for label, names in (
            ("not in the model", unexpected),
            ("wrong shape", mis_shaped),
            ("missing from the source", missing),
        )
        if names
    ]
    if problems:
        raise InitError(f"cannot load {source}: " + "; ".join(problems))
    module.load_state_dict(dict(tensors), strict=False, assign=assign)


def read_safetensors_folder(directory: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a folder: the shards its ``model.safetensors.index.json`` names, or else
    every ``*.safetensors`` file."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are absent: {missing}")
        files = [directory / name for name in shards]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors
