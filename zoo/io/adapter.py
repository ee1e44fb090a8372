"""LoRA adapter folders in peft's format: ``adapter_config.json`` + ``adapter_model.safetensors``
holding only the adapter tensors (``base_model.model.<module>.lora_A.weight``, ...), so
``peft.PeftModel.from_pretrained(base, folder)`` reads them too.

Loading reads the config as data (a LoRA config without Megatron, whose module peft would
import) and the tensors with safetensors; no code from the folder runs.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.io.atomic import atomic_path
from zoo.io.folder import CheckpointFormatError, read_json_object
from zoo.model.lora import ADAPTER_NAME, has_lora

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# the prefix peft's PeftModel gives its base model's names in adapter files
PEFT_PREFIX = "base_model.model."


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the LoRA adapter of ``model`` (from :func:`zoo.model.lora.add_lora`) to
    ``directory``: its config and its adapter tensors only; returns the folder."""
    if not has_lora(model):
        raise ValueError("save_adapter: the model has no LoRA adapter (see module.lora)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    tensors = {PEFT_PREFIX + name: t.detach().contiguous() for name, t in state.items()}
    with atomic_path(directory / ADAPTER_WEIGHTS) as temporary:
        save_file(tensors, temporary, metadata={"format": "pt"})
    model.peft_config[ADAPTER_NAME].save_pretrained(str(directory))
    return directory


def read_adapter_config(directory: str | Path) -> LoraConfig:
    """The LoRA config of an adapter folder; anything else fails naming the folder."""
    directory = Path(directory)
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (directory / n).is_file()]
    if missing:
        raise CheckpointFormatError(
            f"{directory} is not an adapter folder: {missing} missing (expected peft's "
            f"{ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})"
        )
    config = read_json_object(directory / ADAPTER_CONFIG)
    if config.get("peft_type") != "LORA" or config.get("megatron_config"):
        raise CheckpointFormatError(
            f"{directory / ADAPTER_CONFIG}: expected a LoRA adapter (peft_type LORA, no "
            f"megatron_config); got peft_type {config.get('peft_type')!r}"
        )
    return LoraConfig.from_pretrained(str(directory))


def load_adapter(model: nn.Module, directory: str | Path, merge: bool = False) -> nn.Module:
    """``model`` with the LoRA adapter in ``directory`` added (``merge=False``: as layers
    beside the base weights; ``True``: folded into them, the model as built); strict: an
    adapter made for another base fails naming the folder and the tensors."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    tensors = load_file(directory / ADAPTER_WEIGHTS)
    try:
        peft_model = get_peft_model(model, config, adapter_name=ADAPTER_NAME)
        result = set_peft_model_state_dict(peft_model, tensors, adapter_name=ADAPTER_NAME)
    except (ValueError, RuntimeError) as error:
        raise CheckpointFormatError(
            f"{directory}: the adapter does not fit this base model: {error}"
        ) from None
    missing = [name for name in result.missing_keys if ".lora_" in name]
    if missing or result.unexpected_keys:
        raise CheckpointFormatError(
            f"{directory}: the adapter does not fit this base model: missing adapter tensors "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return peft_model.merge_and_unload() if merge else peft_model.get_base_model()
