"""``save_pretrained``: a model built by ``build_model`` written as a checkpoint folder in any of
the three layouts of :mod:`zoo.io.folder`, with its tokenizer files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from zoo.io.atomic import atomic_path, write_text_atomic
from zoo.io.convert.official_checkpoint import (
    ReleasedLayoutError,
    official_config,
    zoo_to_official_tensors,
)
from zoo.io.convert.transformers_checkpoint import transformers_config
from zoo.io.folder import (
    CONFIG_FILE,
    FORMAT_VERSION,
    LAYOUTS,
    RELEASED_CONFIG_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    CheckpointFormatError,
)
from zoo.model.lora import has_lora

if TYPE_CHECKING:  # the model module calls this one
    from zoo.model.ocr_model import OCRModel


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
    if has_lora(model):
        raise ValueError(
            "save_pretrained: the model holds LoRA adapter layers; save the adapter "
            "(zoo.io.adapter.save_adapter) or merge it first (python -m zoo.merge, "
            "zoo.from_pretrained(..., adapter=..., merge_adapter=True))"
        )
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
    # each file renamed into place when complete: a full disk never leaves a truncated one
    with atomic_path(directory / WEIGHTS_FILE) as temporary:
        save_file(tensors, temporary, metadata={"format": "pt"})
    config_file = CONFIG_FILE if layout == "zoo" else RELEASED_CONFIG_FILE
    write_text_atomic(directory / config_file, config_text)
    _copy_tokenizer_files(build.get("text_tokenizer"), directory)
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
            with atomic_path(directory / name) as temporary:
                shutil.copyfile(Path(path) / name, temporary)
