"""Tensors in and out of modules: every tensor of a safetensors folder, and a strict copy into a
module that names what is missing, unexpected or mis-shaped."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from zoo.io.folder import CheckpointFormatError, read_json_object


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
    mis_typed = sorted(
        f"{k} {tensors[k].dtype} (expected {_kind(own[k])})"
        for k in set(tensors) & set(own)
        if _kind(tensors[k]) != _kind(own[k])
    )
    missing = sorted(k for k in set(own) - set(tensors) if not k.startswith(may_be_missing))
    problems = [
        f"{label}: {names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)})"
        for label, names in (
            ("not in the model", unexpected),
            ("wrong shape", mis_shaped),
            ("wrong kind of number", mis_typed),
            ("missing from the source", missing),
        )
        if names
    ]
    if problems:
        raise InitError(f"cannot load {source}: " + "; ".join(problems))
    module.load_state_dict(dict(tensors), strict=False, assign=assign)


def _kind(tensor: torch.Tensor) -> str:
    """What a tensor may be converted from without losing meaning: an integer tensor never
    stands in for a floating-point parameter, nor the other way round."""
    if tensor.dtype == torch.bool:
        return "a bool tensor"
    if tensor.is_complex():
        return "a complex tensor"
    return "a floating-point tensor" if tensor.is_floating_point() else "an integer tensor"


def read_safetensors_file(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file; a truncated or foreign file fails naming itself."""
    try:
        return load_file(file)
    except SafetensorError as error:
        raise CheckpointFormatError(
            f"{file}: not a complete safetensors file ({error}; {file.stat().st_size} bytes); "
            "expected the whole file as written, was a download or copy cut short?"
        ) from None


def read_safetensors_folder(directory: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a folder: the shards its ``model.safetensors.index.json`` names, or else
    every ``*.safetensors`` file."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointFormatError(f"{index}: expected a 'weight_map' object")
        shards = sorted(set(weight_map.values()))
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
        tensors.update(read_safetensors_file(file))
    return tensors
