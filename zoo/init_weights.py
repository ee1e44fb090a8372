"""The ``init`` node of a run config: weights loaded into a freshly built model before training.

``from_pretrained``: a whole model from a checkpoint folder (``zoo.checkpoint.from_pretrained``).
``encoder_from``: only the encoder, from a Lightning ``.ckpt`` of an earlier stage or a
``from_pretrained`` folder (e.g. stage 1's encoder under stage 2's MoE decoder).
``sam`` / ``clip`` / ``qwen2``: one encoder part each from a transformers folder
(``config.json`` + ``*.safetensors``; SAM and CLIP also from a timm folder), see
:mod:`zoo.convert.pretrained_parts`.
They are applied in that order; every load names the tensors that are missing or mis-shaped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from zoo.convert.pretrained_parts import (
    SAM_PARTS_NOT_IN_SAM,
    clip_from_checkpoint,
    qwen2_from_transformers,
    sam_from_checkpoint,
)

log = logging.getLogger(__name__)

INIT_KEYS = ("from_pretrained", "encoder_from", "sam", "clip", "qwen2")
LIGHTNING_MODEL_PREFIX = "model."

# part key -> (module path in OCRModel, converter, zoo names the source never has)
PARTS: dict[str, tuple[str, Callable[[dict], dict], tuple[str, ...]]] = {
    "sam": ("encoder.tokenizer", sam_from_checkpoint, SAM_PARTS_NOT_IN_SAM),
    "clip": ("encoder.clip", clip_from_checkpoint, ()),
    "qwen2": ("encoder.lm", qwen2_from_transformers, ()),
}


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


def _from_pretrained(directory: str) -> nn.Module:
    from zoo.checkpoint import from_pretrained  # zoo.checkpoint imports this module

    return from_pretrained(directory)


def encoder_state(path: Path | str) -> dict[str, torch.Tensor]:
    """The encoder tensors of a Lightning ``.ckpt`` (an OCRLightningModule run) or of a
    ``from_pretrained`` folder, named relative to the encoder."""
    path = Path(path)
    if path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" not in checkpoint:
            raise InitError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
        prefix = LIGHTNING_MODEL_PREFIX + "encoder."
        tensors = {
            k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
        }
        if not tensors:
            raise InitError(f"{path}: no '{prefix}*' tensors; is it an OCRLightningModule run?")
        return tensors
    if path.is_dir():
        return _from_pretrained(str(path)).encoder.state_dict()
    raise FileNotFoundError(f"init.encoder_from: {path} is neither a .ckpt file nor a folder")


def initialize(model: nn.Module, init: Mapping[str, Any] | None) -> None:
    """Apply a run config's ``init`` node to a freshly built :class:`zoo.model.OCRModel`."""
    init = dict(init or {})
    unknown = set(init) - set(INIT_KEYS)
    if unknown:
        raise ValueError(f"init: unknown keys {sorted(unknown)}; valid: {list(INIT_KEYS)}")
    if init.get("from_pretrained"):
        source = init["from_pretrained"]
        load_checked(model, _from_pretrained(source).state_dict(), f"init.from_pretrained={source}")
        log.info("initialised the whole model from %s", source)
    if init.get("encoder_from"):
        source = init["encoder_from"]
        load_checked(model.encoder, encoder_state(source), f"init.encoder_from={source}")
        log.info("initialised the encoder from %s", source)
    for key, (module_path, convert, may_be_missing) in PARTS.items():
        if not init.get(key):
            continue
        source = init[key]
        try:
            module = model.get_submodule(module_path)
        except AttributeError as error:
            raise InitError(
                f"init.{key}: this model has no {module_path} (encoder "
                f"{type(model.encoder).__name__}); sam fits both encoders, clip v1, qwen2 v2"
            ) from error
        tensors = convert(read_safetensors_folder(source))
        load_checked(module, tensors, f"init.{key}={source}", may_be_missing)
        log.info("initialised %s from %s", module_path, source)
