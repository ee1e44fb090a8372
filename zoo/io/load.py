"""``from_pretrained`` and ``load_processor``: a model and its processor from a checkpoint
folder of any layout (:mod:`zoo.io.folder`).

Loading builds the model on the meta device, in the requested precision and the memory layout
that precision runs fastest in, and assigns the stored tensors: memory-mapped, so a tensor that
already fits is never copied, and one that must be converted (dtype, layout, expert stacking,
int8) gives its mapped pages back once its copy exists; the weights stay in memory once.
Then it recomputes the tables that are never stored (rotary frequencies, fixed query tables).
It is strict: missing, unexpected and mis-shaped tensors fail with their names. Tokenizer files
in the folder are used.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from zoo.inputs.processor import OCRProcessor
from zoo.inputs.text_tokenizer import PretrainedTokenizer, load_text_tokenizer
from zoo.io.convert.official_checkpoint import (
    ReleasedLayoutError,
    iter_official_to_zoo_tensors,
)
from zoo.io.folder import (
    CONFIG_FILE,
    TOKENIZER_FILES,
    CheckpointFormatError,
    detect_layout,
    read_build_config,
)
from zoo.io.tensors import MappedTensors, ModelFitter, load_checked, read_safetensors_folder
from zoo.layers.linear import lay_out_weights
from zoo.model.build import build_model
from zoo.model.ocr_model import OCRModel
from zoo.model.quantize import QUANTIZED_ACTIVATION_DTYPE, check_quantize, quantize_model
from zoo.registry import check_plugins_loaded, import_plugins

log = logging.getLogger(__name__)


def _zoo_tensors(
    directory: Path, layout: str, build: dict, stored: MappedTensors, fitter: ModelFitter
) -> Iterator[tuple[str, torch.Tensor]]:
    """The folder's tensors in the model's names, one at a time (aliases aside)."""
    if layout == "zoo":
        yield from stored.items()
        return
    try:
        encoder = build["encoder"]["name"]
        yield from iter_official_to_zoo_tensors(stored, encoder, fitter.stack_experts)
    except ReleasedLayoutError as error:
        raise CheckpointFormatError(f"{directory}: {error}") from error


def _add_aliases(directory: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Tensors a zoo folder stores once under another name (tied weights), shared again."""
    for alias, name in config.get("aliases", {}).items():
        if name not in tensors:
            raise CheckpointFormatError(f"{directory}: alias {alias} points at missing {name}")
        tensors[alias] = tensors[name]


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
    quantize: str | None = None,
) -> OCRModel:
    """The model in ``path`` (any layout of this module), in eval mode.

    ``adapter``: a LoRA adapter folder (peft's format, :mod:`zoo.io.adapter`) trained on this
    base, added as adapter layers, or folded into the weights with ``merge_adapter``.

    ``dtype`` defaults to float32 whatever the stored precision (the releases are bfloat16).
    Stored tensors already in ``dtype`` become the model's without a copy (memory-mapped); the
    others are converted one at a time. ``quantize="int8"`` stores the decoder's weight-heavy
    layers as weight-only int8 (:mod:`zoo.model.quantize`) and runs in bfloat16 (the default
    ``dtype`` then); each is quantized as it is read. ``plugins``: the modules of user
    components this model needs, imported because the caller names them; a plugin the folder's
    config lists but the caller did not name (nor import) fails with
    :class:`~zoo.registry.PluginNotAllowedError`, so loading never runs code the checkpoint
    chose.
    """
    check_quantize(quantize, dtype)
    if quantize and adapter is not None:
        raise ValueError(
            f"quantize={quantize!r} with adapter={str(adapter)!r}: an adapter needs the float "
            "weights; merge it into a folder first (python -m zoo.merge) and quantize that"
        )
    directory = Path(path)
    layout, config = detect_layout(directory)
    build = read_build_config(directory)
    import_plugins(plugins)
    check_plugins_loaded(build.get("plugins") or [], f"{directory / CONFIG_FILE} (build.plugins)")
    dtype = dtype or (QUANTIZED_ACTIVATION_DTYPE if quantize else torch.get_default_dtype())
    tokenizer = _folder_tokenizer(directory)
    if tokenizer is not None and not build.get("text_tokenizer"):
        # recorded, so that saving the model again carries the tokenizer files along
        build = {
            **build,
            "text_tokenizer": {"kind": "pretrained", "path": str(directory.resolve())},
        }
    with torch.device("meta"):
        model = build_model(build, tokenizer=tokenizer)
    model.to(dtype)
    lay_out_weights(model)
    if quantize:
        quantize_model(model, quantize)
    stored = read_safetensors_folder(directory)
    fitter = ModelFitter(model, stored.release)
    tensors = fitter.fit(_zoo_tensors(directory, layout, build, stored, fitter))
    if layout == "zoo":
        _add_aliases(directory, config, tensors)
    load_checked(model, tensors, str(directory), assign=True)
    _report(directory, layout, quantize, tensors, stored)
    del tensors, stored  # the views the model did not keep; its own keep their files mapped
    recompute_derived_buffers(model)
    if adapter is not None:
        from zoo.io.adapter import load_adapter  # peft imports transformers: only when asked

        model = load_adapter(model, adapter, merge=merge_adapter)
    return model.to(device=device).eval()


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (mapped file pages it touched included):
    what the system had to hold for it. Linux's ``VmHWM``, which starts afresh at ``exec``
    (``getrusage``'s peak does not: a process started from a large one inherits its peak);
    elsewhere ``getrusage``'s (bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource  # POSIX only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def recompute_derived_buffers(model: OCRModel) -> None:
    """Fill the buffers no checkpoint stores (each component's ``reset_derived_buffers``) and
    check that nothing is left on the meta device."""
    model.reset_derived_buffers()
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded on the meta device: {left[:10]}")


def _report(
    directory: Path,
    layout: str,
    quantize: str | None,
    tensors: dict[str, torch.Tensor],
    stored: MappedTensors,
) -> None:
    """Log what was loaded: bytes by dtype, how much is used from the mapped files as it is,
    and the process's peak RSS."""
    by_dtype: Counter[str] = Counter()
    mapped = 0
    for tensor in {id(t): t for t in tensors.values()}.values():  # tied weights once
        size = tensor.numel() * tensor.element_size()
        by_dtype[str(tensor.dtype).removeprefix("torch.")] += size
        mapped += size if stored.holds(tensor) else 0
    log.info(
        "loaded %s (%s layout%s): %d tensors, %s; %.2f GB used from the files without a copy; "
        "process peak RSS %.2f GB",
        directory, layout, f", {quantize}" if quantize else "", len(tensors),
        ", ".join(f"{gb / 1e9:.2f} GB {dtype}" for dtype, gb in sorted(by_dtype.items())),
        mapped / 1e9, peak_rss_bytes() / 1e9,
    )  # fmt: skip


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
