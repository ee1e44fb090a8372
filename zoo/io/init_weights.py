"""The ``init`` node of a run config: weights loaded into a freshly built model before training.

``from_pretrained``: a whole model from a checkpoint folder (``zoo.io.load.from_pretrained``).
``encoder_from``: only the encoder, from a Lightning ``.ckpt`` of an earlier stage or a
``from_pretrained`` folder (e.g. stage 1's encoder under stage 2's MoE decoder).
``sam`` / ``clip`` / ``qwen2``: one encoder part each from a transformers folder
(``config.json`` + ``*.safetensors``; SAM and CLIP also from a timm folder), see
:mod:`zoo.io.convert.pretrained_parts`.
They are applied in that order; every load names the tensors that are missing or mis-shaped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.io.convert.pretrained_parts import (
    SAM_PARTS_NOT_IN_SAM,
    clip_from_checkpoint,
    qwen2_from_transformers,
    sam_from_checkpoint,
)
from zoo.io.load import from_pretrained
from zoo.io.tensors import InitError, load_checked, read_safetensors_folder

log = logging.getLogger(__name__)

INIT_KEYS = ("from_pretrained", "encoder_from", "sam", "clip", "qwen2")
LIGHTNING_MODEL_PREFIX = "model."

# part key -> (module path in OCRModel, converter, zoo names the source never has)
PARTS: dict[str, tuple[str, Callable[[dict], dict], tuple[str, ...]]] = {
    "sam": ("encoder.tokenizer", sam_from_checkpoint, SAM_PARTS_NOT_IN_SAM),
    "clip": ("encoder.clip", clip_from_checkpoint, ()),
    "qwen2": ("encoder.lm", qwen2_from_transformers, ()),
}


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
        return from_pretrained(str(path)).encoder.state_dict()
    raise FileNotFoundError(f"init.encoder_from: {path} is neither a .ckpt file nor a folder")


def initialize(model: nn.Module, init: Mapping[str, Any] | None) -> None:
    """Apply a run config's ``init`` node to a freshly built
    :class:`~zoo.model.ocr_model.OCRModel`."""
    init = dict(init or {})
    unknown = set(init) - set(INIT_KEYS)
    if unknown:
        raise ValueError(f"init: unknown keys {sorted(unknown)}; valid: {list(INIT_KEYS)}")
    if init.get("from_pretrained"):
        source = init["from_pretrained"]
        load_checked(model, from_pretrained(source).state_dict(), f"init.from_pretrained={source}")
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
