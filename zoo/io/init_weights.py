"""The ``init`` node of a run config: weights loaded into a freshly built model before training.

``from_pretrained``: a whole model from a checkpoint folder (``zoo.io.load.from_pretrained``) or
from a Lightning ``.ckpt`` of an earlier run (e.g. a lower rung of the study's task ladder).
``encoder_from``: only the encoder, from a Lightning ``.ckpt`` of an earlier stage or a
``from_pretrained`` folder (e.g. stage 1's encoder under stage 2's MoE decoder).
Any other key names a public weight format one part of the model declares
(:meth:`~zoo.model.component.Component.weight_sources`): ``sam`` (the vision tokenizer),
``clip`` (v1's CLIP stage), ``qwen2`` (v2's LM encoder), each a transformers folder
(``config.json`` + ``*.safetensors``; SAM and CLIP also a timm folder), see
:mod:`zoo.io.convert.pretrained_parts`.
They are applied in that order; every load names the tensors that are missing or mis-shaped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo.io.lightning_checkpoint import read_checkpoint_file
from zoo.io.load import from_pretrained
from zoo.io.tensors import InitError, load_checked, read_safetensors_folder
from zoo.model.ocr_model import OCRModel

log = logging.getLogger(__name__)

# the keys of any model; the others are the weight sources its parts declare
INIT_KEYS = ("from_pretrained", "encoder_from")
LIGHTNING_MODEL_PREFIX = "model."


def checkpoint_state(path: Path | str, part: str = "") -> dict[str, torch.Tensor]:
    """The tensors of the model (``part=""``) or of one of its parts (``"encoder"``) from a
    Lightning ``.ckpt`` of an OCRLightningModule run or from a ``from_pretrained`` folder,
    named relative to that part."""
    path = Path(path)
    what = f"init.{'from_pretrained' if not part else part + '_from'}"
    if path.is_file():
        checkpoint = read_checkpoint_file(path)
        if "state_dict" not in checkpoint:
            raise InitError(f"{what}: {path} is not a Lightning checkpoint (no 'state_dict')")
        prefix = LIGHTNING_MODEL_PREFIX + (f"{part}." if part else "")
        tensors = {
            k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
        }
        if not tensors:
            raise InitError(f"{path}: no '{prefix}*' tensors; is it an OCRLightningModule run?")
        return tensors
    if path.is_dir():
        model = from_pretrained(str(path))
        return (model.get_submodule(part) if part else model).state_dict()
    raise FileNotFoundError(f"{what}: {path} is neither a .ckpt file nor a folder")


def initialize(model: OCRModel, init: Mapping[str, Any] | None) -> None:
    """Apply a run config's ``init`` node to a freshly built
    :class:`~zoo.model.ocr_model.OCRModel`; keys set to null are skipped."""
    init = {key: value for key, value in dict(init or {}).items() if value}
    sources = model.weight_sources()
    unknown = set(init) - set(INIT_KEYS) - set(sources)
    if unknown:
        raise InitError(
            f"init: {sorted(unknown)} fit no part of this model (encoder "
            f"{type(model.encoder).__name__}, decoder {type(model.decoder).__name__}); valid "
            f"for it: {[*INIT_KEYS, *sources]}"
        )
    if init.get("from_pretrained"):
        source = init["from_pretrained"]
        load_checked(model, checkpoint_state(source), f"init.from_pretrained={source}")
        log.info("initialised the whole model from %s", source)
    if init.get("encoder_from"):
        source = init["encoder_from"]
        load_checked(
            model.encoder, checkpoint_state(source, "encoder"), f"init.encoder_from={source}"
        )
        log.info("initialised the encoder from %s", source)
    for key, part in sources.items():
        if key not in init:
            continue
        tensors = part.convert(read_safetensors_folder(init[key]))
        module = model.get_submodule(part.submodule)
        load_checked(module, tensors, f"init.{key}={init[key]}", part.never_in_source)
        log.info("initialised %s from %s", part.submodule, init[key])
