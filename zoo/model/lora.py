"""LoRA adapters on a model's roles, built with ``peft``.

A target is a role: one a component declares for adapters (``model.adapter_targets()``:
``decoder_attention``, ``decoder_mlp``, ``shared_experts``, ``routed_experts``), or any role of
``model.roles()`` (``projector``, ``lm_encoder``, ``clip``, ``decoder``, ...), which wraps every
linear layer under it. The components say which modules a role is, so no module path is written
here. Routed experts are stacked ``[experts, in, out]`` tensors, which peft adapts through
``target_parameters`` (its ``ParamWrapper``, one low-rank pair per expert); peft allows no
dropout on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from zoo.model.component import Component, linear_paths

if TYPE_CHECKING:  # peft imports transformers: only when adapters are made
    from peft import LoraConfig

# the peft adapter name the zoo trains, saves and loads
ADAPTER_NAME = "default"
DEFAULT_TARGETS = ("decoder_attention", "decoder_mlp", "shared_experts", "projector")


def lora_targets(model: Component) -> dict[str, list[str]]:
    """Every LoRA target role of ``model`` -> the module or parameter paths it wraps."""
    declared = model.adapter_targets()
    modules = dict(model.named_modules())
    by_role = {  # a role naming a parameter (queries, layout vectors) holds no linear layer
        role: linear_paths(modules[path], path)
        for role, path in model.roles().items()
        if path in modules
    }
    clash = sorted(declared.keys() & by_role.keys())
    if clash:
        raise ValueError(f"adapter target roles {clash} are also model roles; rename them")
    return {**by_role, **declared}


def lora_config(
    model: Component,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = DEFAULT_TARGETS,
) -> LoraConfig:
    """The peft ``LoraConfig`` of a LoRA of ``rank`` on the ``targets`` roles of ``model``:
    linear layers as ``target_modules``, stacked expert tensors as ``target_parameters``."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"lora rank must be >= 1, got {rank}")
    available = lora_targets(model)
    valid = sorted(role for role, paths in available.items() if paths)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise ValueError(f"lora targets: no role named {unknown} in the model; valid: {valid}")
    paths = [path for target in targets for path in available[target]]
    if not paths:
        raise ValueError(
            f"lora targets {list(targets)} hold no layer in this model; valid: {valid}"
        )
    modules = {name for name, _ in model.named_modules()}
    linears = sorted({p for p in paths if p in modules})
    parameters = sorted({p for p in paths if p not in modules})
    if parameters and dropout:
        raise ValueError(
            f"lora dropout={dropout}: peft adapts stacked expert tensors (routed_experts) "
            "without dropout; set module.lora.dropout=0 or leave routed_experts out of targets"
        )
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=linears,
        target_parameters=parameters or None,
    )


def add_lora(model: Component, config: LoraConfig) -> Component:
    """Wrap the layers ``config`` (from :func:`lora_config`) targets in LoRA adapters in place
    (the model keeps its class, methods and parameter paths; a wrapped layer's weight moves to
    ``base_layer``) and freeze every other parameter; returns ``model``."""
    from peft import inject_adapter_in_model

    return inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)


def has_lora(model: nn.Module) -> bool:
    """Whether peft adapters were added to ``model``."""
    return hasattr(model, "peft_config")
