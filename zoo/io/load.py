"""``from_pretrained`` and ``load_processor``: a model and its processor from a checkpoint
folder of any layout (:mod:`zoo.io.folder`).

Loading builds the model on the meta device and assigns the stored tensors (no random
initialisation, one copy in memory), then recomputes the tables that are never stored (rotary
frequencies, fixed query tables). It is strict: missing, unexpected and mis-shaped tensors fail
with their names. Tokenizer files in the folder are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from zoo.inputs.processor import OCRProcessor
from zoo.inputs.text_tokenizer import PretrainedTokenizer, load_text_tokenizer
from zoo.io.convert.official_checkpoint import ReleasedLayoutError, official_to_zoo_tensors
from zoo.io.folder import (
    CONFIG_FILE,
    TOKENIZER_FILES,
    CheckpointFormatError,
    detect_layout,
    read_build_config,
)
from zoo.io.tensors import load_checked, read_safetensors_folder
from zoo.model.build import build_model
from zoo.model.ocr_model import OCRModel
from zoo.registry import check_plugins_loaded, import_plugins


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
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    plugins: Sequence[str] = (),
    adapter: str | Path | None = None,
    merge_adapter: bool = False,
) -> OCRModel:
    """The model in ``path`` (any layout of this module), in eval mode.

    ``adapter``: a LoRA adapter folder (peft's format, :mod:`zoo.io.adapter`) trained on this
    base, added as adapter layers, or folded into the weights with ``merge_adapter``.

    ``dtype`` defaults to float32 whatever the stored precision (the releases are bfloat16).
    ``plugins``: the modules of user components this model needs, imported because the caller
    names them; a plugin the folder's config lists but the caller did not name (nor import)
    fails with :class:`~zoo.registry.PluginNotAllowedError`, so loading never runs code the
    checkpoint chose.
    """
    directory = Path(path)
    layout, config = detect_layout(directory)
    build = read_build_config(directory)
    import_plugins(plugins)
    check_plugins_loaded(build.get("plugins") or [], f"{directory / CONFIG_FILE} (build.plugins)")
    tensors = _zoo_tensors(directory, layout, config, build)
    dtype = dtype or torch.get_default_dtype()
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensors[name] = tensor.to(dtype)
    tokenizer = _folder_tokenizer(directory)
    if tokenizer is not None and not build.get("text_tokenizer"):
        # recorded, so that saving the model again carries the tokenizer files along
        build = {
            **build,
            "text_tokenizer": {"kind": "pretrained", "path": str(directory.resolve())},
        }
    with torch.device("meta"):
        model = build_model(build, tokenizer=tokenizer)
    load_checked(model, tensors, str(directory), assign=True)
    recompute_derived_buffers(model)
    if adapter is not None:
        from zoo.io.adapter import load_adapter  # peft imports transformers: only when asked

        model = load_adapter(model, adapter, merge=merge_adapter)
    return model.to(device=device).eval()


def recompute_derived_buffers(model: OCRModel) -> None:
    """Fill the buffers no checkpoint stores (each component's ``reset_derived_buffers``) and
    check that nothing is left on the meta device."""
    model.reset_derived_buffers()
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded on the meta device: {left[:10]}")


def load_processor(path: str | Path) -> OCRProcessor:
    """The processor of a saved model: the tokenizer files in ``path`` when it has them, else
    the tokenizer its config names; the model's view mode."""
    directory = Path(path)
    build = read_build_config(directory)
    tokenizer = _folder_tokenizer(directory) or load_text_tokenizer(build.get("text_tokenizer"))
    model_cfg = build.get("model") or {}
    expected = model_cfg.get("image_token_id", tokenizer.image_id)
    if tokenizer.image_id != expected:
        raise CheckpointFormatError(
            f"{directory}: the model's <image> token id is {expected} but the tokenizer found "
            f"gives {tokenizer.image_id}; put the model's tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:2])}) in the folder"
        )
    return OCRProcessor(tokenizer, image_mode=model_cfg.get("image_mode"))
