"""Checkpoint folders: ``from_pretrained`` reads a model from any of three layouts and
``save_pretrained`` writes any of them.

* ``zoo``: ``zoo_config.json`` (the ``build_model`` config) + ``model.safetensors`` in the
  model's own names. Tensors that share storage (tied embeddings) are stored once and the
  config records their aliases. Every registered component and option round-trips bit-exactly.
* ``official``: the released DeepSeek-OCR / DeepSeek-OCR-2 folders (``config.json`` with
  ``model_type: deepseek_vl_v2``, safetensors rooted at ``model.``, sharded or not); the version
  is read from ``vision_config.model_name`` (see :mod:`zoo.convert.official_checkpoint`).
* ``transformers``: folders written by transformers' ``DeepseekOcr2ForConditionalGeneration``
  (``model_type: deepseek_ocr2``; see :mod:`zoo.convert.transformers_checkpoint`).

Loading builds the model on the meta device and assigns the stored tensors (no random
initialisation, one copy in memory), then recomputes the tables that are never stored (rotary
frequencies, fixed query tables). It is strict: missing, unexpected and mis-shaped tensors fail
with their names. Tokenizer files in the folder are used (and copied on save).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from zoo.build import build_model
from zoo.convert.official_checkpoint import (
    ReleasedLayoutError,
    build_config_from_official,
    official_config,
    official_to_zoo_tensors,
    vision_name,
    zoo_to_official_tensors,
)
from zoo.convert.transformers_checkpoint import (
    MODEL_TYPE as TRANSFORMERS_MODEL_TYPE,
)
from zoo.convert.transformers_checkpoint import (
    build_config_from_transformers,
    transformers_config,
)
from zoo.init_weights import load_checked, read_safetensors_folder
from zoo.model import OCRModel
from zoo.processor import OCRProcessor
from zoo.tokenizer import PretrainedTokenizer, load_tokenizer

CONFIG_FILE = "zoo_config.json"
RELEASED_CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
LAYOUTS = ("zoo", "official", "transformers")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class CheckpointFormatError(ValueError):
    """A folder that is not a checkpoint this version can read, or a model a layout cannot hold."""


def detect_layout(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """``(layout, the folder's config file as a dict)``; layout is one of :data:`LAYOUTS`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(directory)!r} does not exist")
    zoo_config = directory / CONFIG_FILE
    if zoo_config.is_file():
        config = json.loads(zoo_config.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise CheckpointFormatError(
                f"{zoo_config}: format_version {config.get('format_version')!r}; this version "
                f"reads {FORMAT_VERSION}"
            )
        return "zoo", config
    released = directory / RELEASED_CONFIG_FILE
    if released.is_file():
        config = json.loads(released.read_text())
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
            return config["build"]
        if layout == "official":
            return build_config_from_official(config, source)
        return build_config_from_transformers(config, source)
    except ReleasedLayoutError as error:
        raise CheckpointFormatError(str(error)) from error


def _zoo_tensors(directory: Path, layout: str, config: dict, build: dict) -> dict:
    """The folder's tensors in the model's names."""
    tensors = read_safetensors_folder(directory)
    if layout != "zoo":
        try:
            return official_to_zoo_tensors(tensors, build["encoder"]["name"])
        except ReleasedLayoutError as error:
            raise CheckpointFormatError(f"{directory}: {error}") from error
    for alias, name in config.get("aliases", {}).items():
        if name not in tensors:
            raise CheckpointFormatError(f"{directory}: alias {alias} points at missing {name}")
        tensors[alias] = tensors[name]
    return tensors


def _folder_tokenizer(directory: Path) -> PretrainedTokenizer | None:
    has_files = any((directory / name).is_file() for name in TOKENIZER_FILES[:2])
    return PretrainedTokenizer(directory) if has_files else None


def from_pretrained(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> OCRModel:
    """The model in ``path`` (any layout of this module), in eval mode.

    ``dtype`` defaults to float32 whatever the stored precision (the releases are bfloat16).
    """
    directory = Path(path)
    layout, config = detect_layout(directory)
    build = read_build_config(directory)
    tensors = _zoo_tensors(directory, layout, config, build)
    dtype = dtype or torch.get_default_dtype()
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensors[name] = tensor.to(dtype)
    tokenizer = _folder_tokenizer(directory)
    if tokenizer is not None and not build.get("tokenizer"):
        # recorded, so that saving the model again carries the tokenizer files along
        build = {**build, "tokenizer": {"kind": "pretrained", "path": str(directory.resolve())}}
    with torch.device("meta"):
        model = build_model(build, tokenizer=tokenizer)
    load_checked(model, tensors, str(directory), assign=True)
    recompute_derived_buffers(model)
    return model.to(device=device).eval()


def recompute_derived_buffers(model: nn.Module) -> None:
    """Fill the buffers no checkpoint stores (each module's ``reset_derived_buffers``) and check
    that nothing is left on the meta device."""
    for module in model.modules():
        reset = getattr(module, "reset_derived_buffers", None)
        if reset is not None:
            reset()
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded on the meta device: {left[:10]}")


def save_pretrained(model: OCRModel, directory: str | Path, layout: str = "zoo") -> Path:
    """Write ``model`` (built by ``build_model``) to ``directory`` in ``layout``; returns it.

    ``official`` and ``transformers`` hold only the released architectures (see their modules);
    other models raise :class:`CheckpointFormatError` naming what does not fit.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; valid: {list(LAYOUTS)}")
    build = getattr(model, "build_config", None)
    if build is None:
        raise ValueError("save_pretrained needs a model made by zoo.build_model (no build config)")
    directory = Path(directory)
    try:
        if layout == "zoo":
            tensors, config_text = _zoo_layout(model, build)
        elif layout == "official":
            tensors = zoo_to_official_tensors(model.state_dict(), build["encoder"]["name"])
            config_text = json.dumps(official_config(build, model.image_token_id), indent=2)
        else:
            tensors = zoo_to_official_tensors(model.state_dict(), build["encoder"]["name"])
            config_text = transformers_config(build, model.image_token_id).to_json_string()
    except ReleasedLayoutError as error:
        raise CheckpointFormatError(f"cannot save in the {layout} layout: {error}") from error
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    config_file = CONFIG_FILE if layout == "zoo" else RELEASED_CONFIG_FILE
    (directory / config_file).write_text(config_text)
    _copy_tokenizer_files(build.get("tokenizer"), directory)
    return directory


def _zoo_layout(model: OCRModel, build: dict) -> tuple[dict[str, torch.Tensor], str]:
    """The zoo layout's tensors (shared storage stored once) and config text."""
    tensors, aliases = {}, {}
    first_name_of: dict[tuple[int, torch.dtype, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key in first_name_of:
            aliases[name] = first_name_of[key]
            continue
        first_name_of[key] = name
        tensors[name] = tensor
    config = {"format_version": FORMAT_VERSION, "build": build, "aliases": aliases}
    return tensors, json.dumps(config, indent=2, sort_keys=True)


def _copy_tokenizer_files(spec: Any, directory: Path) -> None:
    """A pretrained tokenizer's files travel with the model, so the folder stands alone."""
    path = spec.get("path") if isinstance(spec, dict) else spec
    if not path or not Path(path).is_dir() or Path(path).resolve() == directory.resolve():
        return
    for name in TOKENIZER_FILES:
        if (Path(path) / name).is_file():
            shutil.copyfile(Path(path) / name, directory / name)


def load_processor(path: str | Path) -> OCRProcessor:
    """The processor of a saved model: the tokenizer files in ``path`` when it has them, else
    the tokenizer its config names; the model's view mode."""
    directory = Path(path)
    build = read_build_config(directory)
    tokenizer = _folder_tokenizer(directory) or load_tokenizer(build.get("tokenizer"))
    model_cfg = build.get("model") or {}
    expected = model_cfg.get("image_token_id", tokenizer.image_id)
    if tokenizer.image_id != expected:
        raise CheckpointFormatError(
            f"{directory}: the model's <image> token id is {expected} but the tokenizer found "
            f"gives {tokenizer.image_id}; put the model's tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:2])}) in the folder"
        )
    return OCRProcessor(tokenizer, image_mode=model_cfg.get("image_mode"))
