"""Checkpoint folders on disk: which of the three layouts a folder holds, and the
``build_model`` config of the model in it.

* ``zoo``: ``zoo_config.json`` (the ``build_model`` config) + ``model.safetensors`` in the
  model's own names. Tensors that share storage (tied embeddings) are stored once and the
  config records their aliases. Every registered component and option round-trips bit-exactly.
* ``official``: the released DeepSeek-OCR / DeepSeek-OCR-2 folders (``config.json`` with
  ``model_type: deepseek_vl_v2``, safetensors rooted at ``model.``, sharded or not); the version
  is read from ``vision_config.model_name`` (see :mod:`zoo.io.convert.official_checkpoint`).
* ``transformers``: folders written by transformers' ``DeepseekOcr2ForConditionalGeneration``
  (``model_type: deepseek_ocr2``; see :mod:`zoo.io.convert.transformers_checkpoint`).

:mod:`zoo.io.load` reads them and :mod:`zoo.io.save` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.io.convert.official_checkpoint import (
    ReleasedLayoutError,
    build_config_from_official,
    vision_name,
)
from zoo.io.convert.transformers_checkpoint import MODEL_TYPE as TRANSFORMERS_MODEL_TYPE
from zoo.io.convert.transformers_checkpoint import build_config_from_transformers
from zoo.model.config import upgrade_build_config

CONFIG_FILE = "zoo_config.json"
RELEASED_CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
LAYOUTS = ("zoo", "official", "transformers")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class CheckpointFormatError(ValueError):
    """A folder that is not a checkpoint this version can read, or a model a layout cannot hold."""


def read_json_object(path: Path) -> dict[str, Any]:
    """A config file that must hold a JSON object; anything else fails naming the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointFormatError(
            f"{path}: not valid JSON ({error}); expected a JSON object"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def detect_layout(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """``(layout, the folder's config file as a dict)``; layout is one of :data:`LAYOUTS`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(directory)!r} does not exist")
    zoo_config = directory / CONFIG_FILE
    if zoo_config.is_file():
        config = read_json_object(zoo_config)
        if config.get("format_version") != FORMAT_VERSION:
            raise CheckpointFormatError(
                f"{zoo_config}: format_version {config.get('format_version')!r}; this version "
                f"reads {FORMAT_VERSION}"
            )
        return "zoo", config
    released = directory / RELEASED_CONFIG_FILE
    if released.is_file():
        config = read_json_object(released)
        if config.get("model_type") == TRANSFORMERS_MODEL_TYPE:
            return "transformers", config
        if vision_name(config) is not None:
            return "official", config
        raise CheckpointFormatError(
            f"{released}: neither a released DeepSeek-OCR / OCR-2 config (vision_config."
            f"model_name deeplip_b_l or deepencoderv2) nor transformers' (model_type "
            f"{TRANSFORMERS_MODEL_TYPE!r}); got model_type {config.get('model_type')!r}"
        )
    raise CheckpointFormatError(
        f"{directory} is not a checkpoint folder: expected {CONFIG_FILE} (zoo) or "
        f"{RELEASED_CONFIG_FILE} (released DeepSeek-OCR / OCR-2 or transformers) with safetensors"
    )


def read_build_config(directory: str | Path) -> dict[str, Any]:
    """The ``build_model`` config of the model in a checkpoint folder of any layout."""
    layout, config = detect_layout(directory)
    source = str(Path(directory) / (CONFIG_FILE if layout == "zoo" else RELEASED_CONFIG_FILE))
    try:
        if layout == "zoo":
            if not isinstance(config.get("build"), dict):
                raise CheckpointFormatError(
                    f"{source}: expected a 'build' object (the build_model config: encoder, "
                    f"projector, decoder, model); got keys {sorted(config)}"
                )
            return upgrade_build_config(config["build"])
        if layout == "official":
            return build_config_from_official(config, source)
        return build_config_from_transformers(config, source)
    except ReleasedLayoutError as error:
        raise CheckpointFormatError(str(error)) from error
