"""Checkpoint folders: ``save_pretrained`` writes a model and the config that built it,
``from_pretrained`` rebuilds it and loads the tensors back bit-exactly.

A zoo folder holds ``zoo_config.json`` (the ``build_model`` config) and ``model.safetensors``.
Tensors that share storage (tied embeddings) are stored once, and the config records their
aliases. Loading is strict: missing, unexpected or mis-shaped tensors fail with their names.
Folders of the released DeepSeek-OCR / DeepSeek-OCR-2 checkpoints and of transformers'
``DeepseekOcr2`` model are recognised and refused with a message: their loaders are not
written yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.build import build_model
from zoo.init_weights import load_checked
from zoo.model import OCRModel
from zoo.processor import OCRProcessor
from zoo.tokenizer import PretrainedTokenizer, load_tokenizer

CONFIG_FILE = "zoo_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class CheckpointFormatError(ValueError):
    """A folder that is not a checkpoint this version can read."""


def save_pretrained(model: OCRModel, directory: str | Path) -> Path:
    """Write ``model`` (built by ``build_model``) to ``directory``; returns the folder."""
    build_config = getattr(model, "build_config", None)
    if build_config is None:
        raise ValueError("save_pretrained needs a model made by zoo.build_model (no build config)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, aliases = {}, {}
    first_name_of: dict[tuple[int, torch.dtype, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key in first_name_of:
            aliases[name] = first_name_of[key]
            continue
        first_name_of[key] = name
        tensors[name] = tensor.detach().contiguous()
    save_file(tensors, directory / WEIGHTS_FILE)
    config = {"format_version": FORMAT_VERSION, "build": build_config, "aliases": aliases}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def _read_config(directory: Path) -> dict:
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(directory)!r} does not exist")
    config_file = directory / CONFIG_FILE
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise CheckpointFormatError(
                f"{config_file}: format_version {config.get('format_version')!r}; this version "
                f"reads {FORMAT_VERSION}"
            )
        return config
    official = directory / "config.json"
    if official.is_file():
        raise CheckpointFormatError(
            f"{directory} holds a config.json (a released DeepSeek-OCR / OCR-2 or transformers "
            f"checkpoint) but no {CONFIG_FILE}; loading those layouts is not supported yet"
        )
    raise CheckpointFormatError(
        f"{directory} is not a checkpoint folder: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
    )


def from_pretrained(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> OCRModel:
    """The model saved in ``path`` by :func:`save_pretrained`, in eval mode."""
    directory = Path(path)
    config = _read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointFormatError(f"{directory}: {WEIGHTS_FILE} is missing")
    tensors = load_file(weights)
    for alias, name in config.get("aliases", {}).items():
        if name not in tensors:
            raise CheckpointFormatError(f"{weights}: alias {alias} points at missing {name}")
        tensors[alias] = tensors[name]
    model = build_model(config["build"])
    load_checked(model, tensors, str(directory))
    return model.to(device=device, dtype=dtype).eval()


def load_processor(path: str | Path) -> OCRProcessor:
    """The processor of a saved model: the tokenizer files in ``path`` when it has them, else
    the tokenizer its config names; the model's view mode."""
    directory = Path(path)
    build = _read_config(directory)["build"]
    if any((directory / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = PretrainedTokenizer(directory)
    else:
        tokenizer = load_tokenizer(build.get("tokenizer"))
    return OCRProcessor(tokenizer, image_mode=(build.get("model") or {}).get("image_mode"))
