"""What every part of a model declares to the rest of the zoo, as timm models own
``no_weight_decay`` and ``set_grad_checkpointing``.

A :class:`Component` (every vision encoder, language decoder, reusable encoder stage and the
:class:`~zoo.model.ocr_model.OCRModel` itself) names the parameters without weight decay,
checkpoints the activations of its own blocks, lists the public weight formats its parts can
start from, rebuilds the buffers no checkpoint stores and names the roles a training stage
freezes. The optimiser, ``init``, ``from_pretrained`` and the stages read these declarations,
so adding a component edits no list elsewhere.

A component that holds others (an encoder and its vision tokenizer, the model and its encoder)
gets its parts' declarations by default, under their paths; it overrides a method to add its
own (``super()`` first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from operator import methodcaller
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

V = TypeVar("V")


def join(path: str, name: str) -> str:
    """``path.name``, where an empty ``path`` or ``name`` stands for the component itself."""
    return f"{path}.{name}" if path and name else path or name


def linear_paths(module: nn.Module, path: str = "") -> list[str]:
    """Paths of the ``nn.Linear`` layers inside ``module`` (itself included), under ``path``."""
    return [join(path, name) for name, m in module.named_modules() if isinstance(m, nn.Linear)]


@dataclass(frozen=True)
class WeightSource:
    """A public weight format one part can start from: the ``init.<key>`` entry of a run.

    ``convert`` maps the tensors of such a folder to the names of the part at ``submodule``
    (relative to the declaring component, ``""`` for itself); ``never_in_source`` are name
    prefixes of that part no such folder has, which keep their initialisation.
    """

    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    submodule: str = ""
    never_in_source: tuple[str, ...] = ()


class CheckpointedForward:
    """Stands in for ``module.forward``: with gradients on, runs the block under non-reentrant
    ``torch.utils.checkpoint`` (activations recomputed in the backward pass); without, as is."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = type(self.module).forward.__get__(self.module)
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)


def merge_declarations(
    declarations: Iterable[tuple[str, Mapping[str, V]]], what: str
) -> dict[str, V]:
    """One mapping from several ``(declared by, mapping)``; a key declared twice is an error
    naming both declarers, since a stage's role or an ``init`` key must mean one part."""
    merged: dict[str, V] = {}
    declarer: dict[str, str] = {}
    for declared_by, mapping in declarations:
        for key, value in mapping.items():
            if key in merged:
                raise ValueError(
                    f"{what} {key!r} is declared by both {declarer[key]} and {declared_by}; "
                    "rename one of them"
                )
            merged[key], declarer[key] = value, declared_by
    return merged


class Component(nn.Module):
    """A module that declares what the optimiser, checkpointing, loading and stages need."""

    def parts(self) -> Iterator[tuple[str, Component]]:
        """The outermost components inside this one, with their paths."""
        return ((path, m) for path, m in self._members() if isinstance(m, Component))

    def own_modules(self) -> Iterator[nn.Module]:
        """This component's submodules that belong to none of its parts."""
        return (m for _, m in self._members() if not isinstance(m, Component))

    def _members(self) -> Iterator[tuple[str, nn.Module]]:
        """Every submodule with its path, down to the outermost parts but not inside them."""
        stack = list(self.named_children())
        while stack:
            path, module = stack.pop(0)
            yield path, module
            if not isinstance(module, Component):
                stack.extend((join(path, n), c) for n, c in module.named_children())

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this component) of the parameters AdamW leaves undecayed besides
        the 1-D ones and embedding tables: position tables and learned tokens, which decay
        would pull to zero for no reason. By default those of its parts."""
        return {join(path, name) for path, part in self.parts() for name in part.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of this component's repeated blocks in the backward pass
        (memory for compute), or stop with ``enable=False``. By default every block of each
        ``nn.ModuleList`` it owns; its parts do their own. The forward is replaced on the
        block instance, so parameter names, roles and checkpoints stay the same."""
        for module in self.own_modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    checkpointed = isinstance(block.__dict__.get("forward"), CheckpointedForward)
                    if enable and not checkpointed:
                        block.forward = CheckpointedForward(block)
                    elif checkpointed and not enable:
                        del block.forward
        for _, part in self.parts():
            part.set_grad_checkpointing(enable)

    def weight_sources(self) -> dict[str, WeightSource]:
        """The public weight formats this component's parts can start from, by ``init`` key
        (e.g. ``sam``: a SAM folder for the vision tokenizer). By default those of its parts."""
        return self._from_parts(
            methodcaller("weight_sources"),
            lambda path, source: replace(source, submodule=join(path, source.submodule)),
            "weight source",
        )

    def reset_derived_buffers(self) -> None:
        """Recompute the buffers no checkpoint stores (rotary frequencies, fixed tables), e.g.
        after a build on the meta device. By default those of its parts."""
        for _, part in self.parts():
            part.reset_derived_buffers()

    def roles(self) -> dict[str, str]:
        """Named parts a training stage can freeze: role -> module or parameter path relative
        to this component (e.g. ``vision_tokenizer -> tokenizer``). By default its parts'."""
        return self._from_parts(methodcaller("roles"), join, "role")

    def adapter_targets(self) -> dict[str, list[str]]:
        """LoRA target roles finer than :meth:`roles` (a LoRA on a role of :meth:`roles` wraps
        every linear layer under it): role -> paths, relative to this component, of the linear
        layers or stacked weight tensors it wraps, e.g. ``decoder_attention``. A role a
        component has no instance of (shared experts of a dense decoder) maps to ``[]``. By
        default its parts'."""
        return self._from_parts(
            methodcaller("adapter_targets"),
            lambda path, paths: [join(path, p) for p in paths],
            "adapter target",
        )

    def _from_parts(
        self,
        declared: Callable[[Component], Mapping[str, V]],
        rebase: Callable[[str, V], V],
        what: str,
    ) -> dict[str, V]:
        """The parts' ``declared`` mappings in one, each value ``rebase``d onto the part's path."""
        return merge_declarations(
            (
                (path, {key: rebase(path, value) for key, value in declared(part).items()})
                for path, part in self.parts()
            ),
            what,
        )
