"""Any timm backbone as the vision tokenizer of either system, in place of SAM-B.

Both DeepEncoders read a tokenizer map with one cell per 64 px of the view (16 px patches, then a
16x compressor): a 1024 view gives 16 x 16 tokens, a 768 crop 12 x 12. This tokenizer takes one
feature map of a timm model (``forward_intermediates``, the uniform timm API), measures its
stride and width by running the model once on a small view at build time, and adds as many
bias-free 3x3 stride-2 convolutions as bring that stride to 64 (two after a ViT's 16 px
patches, as in SAM's compressor; one after a ConvNeXt's last stage at 32 px), or a 1x1
projection where the stride is already 64 but the width differs.

timm is imported when one is built, so loading the encoder registry stays light. ``pretrained``
is a local checkpoint (a file, or a timm folder with ``model.safetensors`` or
``pytorch_model.bin``) read through timm's own loader and the model family's checkpoint filter;
nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.base import VisionEncoder
from zoo.registry import register_encoder

# pixels per output token side in both releases: 16 px patches, then the 16x compressor
TOKEN_STRIDE = 64
# the probe view must be a multiple of every stride a tokenizer can start from (a power of two
# up to TOKEN_STRIDE), and holds 4 x 4 output tokens
PROBE_SIZE = 4 * TOKEN_STRIDE
# what a timm hub folder holds, in the order timm itself prefers
TIMM_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or the weights of a timm folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in TIMM_FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"timm folder {path} has none of {list(TIMM_FOLDER_FILES)}; it holds "
            f"{sorted(p.name for p in path.iterdir())}"
        )
    raise FileNotFoundError(f"pretrained weights {path} do not exist (a file or a timm folder)")


def load_timm_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local timm checkpoint into ``model`` (built with ``num_classes=0``), strictly.

    The tensors go through the family's ``checkpoint_filter_fn`` as timm's builder does for
    hub weights (original-format names, position tables resized to the model's grid); the
    classifier is dropped, since the tokenizer has none.
    """
    import timm
    from timm.models import load_state_dict

    file = timm_checkpoint_file(path)
    state = load_state_dict(str(file), weights_only=True)
    name = model.pretrained_cfg["architecture"]
    family = importlib.import_module(timm.models.model_entrypoint(name).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    classifiers = model.pretrained_cfg.get("classifier") or ()
    try:  # the filter and the load fail with KeyError / RuntimeError on another model's tensors
        if filter_fn is not None:
            state = filter_fn(state, model)
        for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
            state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{file} does not fit timm model {name!r}: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"{file} does not fit timm model {name!r}: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}"
        )


def compressor(channels: int, out_dim: int, num_halvings: int, mid_channels: int) -> nn.Module:
    """``num_halvings`` bias-free 3x3 stride-2 convs (``channels -> mid_channels ... ->
    out_dim``, SAM's compressor for two), or a 1x1 projection / nothing when there are none."""
    if num_halvings == 0:
        return nn.Identity() if channels == out_dim else nn.Conv2d(channels, out_dim, 1)
    widths = [channels] + [mid_channels] * (num_halvings - 1) + [out_dim]
    return nn.Sequential(
        *(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
    )


@register_encoder("timm")
class TimmTokenizer(VisionEncoder):
    """A timm backbone's feature map, brought to 64 px per token by stride-2 convs (any timm model).

    ``model`` is a timm model name, built with ``model_kwargs`` (e.g. ``dynamic_img_size: true``
    for a ViT, so views other than its ``img_size`` work, or smaller widths and depths);
    ``feature_index`` picks the block or stage whose output is read (timm's
    ``forward_intermediates`` indices, with ``norm`` its final norm, for SAM its neck);
    ``out_dim`` is the width the encoder stage reads and ``mid_channels`` the width between
    two compressor convs; ``pretrained`` a local timm checkpoint file or folder.
    ``forward_features`` returns ``[B, out_dim, S/64, S/64]`` for an ``S`` px view.
    """

    def __init__(
        self,
        model: str,
        out_dim: int = 896,
        feature_index: int = -1,
        norm: bool = True,
        mid_channels: int = 512,
        pretrained: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model):
            close = timm.list_models(f"*{model.split('_')[0]}*")[:12]
            raise ValueError(f"unknown timm model {model!r}; similar timm models: {close}")
        self.model_name = model
        self.model = timm.create_model(
            model, pretrained=False, num_classes=0, **dict(model_kwargs or {})
        )
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(
                f"timm model {model!r} has no forward_intermediates, so its feature maps "
                "cannot be read; choose another model"
            )
        building_for_real = not next(self.model.parameters()).is_meta
        if pretrained is not None and building_for_real:  # a meta build gets stored tensors
            load_timm_weights(self.model, pretrained)
        self.norm = norm
        self.feature_indices = self.model.prune_intermediate_layers(
            [feature_index], prune_norm=not norm, prune_head=True
        )
        channels, self.feature_stride = self._probe()
        halvings = TOKEN_STRIDE // self.feature_stride
        if TOKEN_STRIDE % self.feature_stride or halvings & (halvings - 1):
            raise ValueError(
                f"timm model {model!r} gives feature_index={feature_index} at stride "
                f"{self.feature_stride}, which stride-2 convs cannot bring to {TOKEN_STRIDE} px "
                "per token; choose a feature_index whose stride is a power of two up to "
                f"{TOKEN_STRIDE} ({[f['reduction'] for f in self.model.feature_info]})"
            )
        self.num_halvings = int(math.log2(halvings))
        self.compressor = compressor(channels, out_dim, self.num_halvings, mid_channels)
        self.out_dim = out_dim

    def _probe(self) -> tuple[int, int]:
        """Channels and stride of the chosen feature map, from one small view (in eval mode, so
        that batch norms keep their running statistics)."""
        param = next(self.model.parameters())
        pixels = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=param.device, dtype=param.dtype)
        training = self.model.training
        try:
            with torch.no_grad():
                self.model.eval()
                feature = self._features(pixels)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise ValueError(
                f"timm model {self.model_name!r} fails on a {PROBE_SIZE} px view ({err}); a "
                "model with a fixed input size needs model_kwargs such as "
                "{dynamic_img_size: true}"
            ) from err
        finally:
            self.model.train(training)
        height, width = feature.shape[-2:]
        if height != width or PROBE_SIZE % height:
            raise ValueError(
                f"timm model {self.model_name!r} maps a {PROBE_SIZE} px view to a "
                f"{height} x {width} grid, which is no whole stride"
            )
        return feature.shape[1], PROBE_SIZE // height

    def _features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(
            pixel_values, indices=self.feature_indices, norm=self.norm, intermediates_only=True
        )[0]

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` pixels -> ``[B, out_dim, S/64, S/64]`` tokenizer map."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}"
            )
        self.num_tokens(pixel_values.shape[-1])  # checks the view size
        return self.compressor(self._features(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values).flatten(2).transpose(1, 2)

    def num_tokens(self, view_size: int) -> int:
        if view_size % self.feature_stride:
            raise ValueError(
                f"a {view_size} px view is not a multiple of the {self.feature_stride} px "
                f"stride of timm model {self.model_name!r}; use views that are"
            )
        side = view_size // self.feature_stride
        for _ in range(self.num_halvings):  # each conv (kernel 3, stride 2, padding 1): ceil
            side = (side + 1) // 2
        return side * side

    def no_weight_decay(self) -> set[str]:
        """The position tables and learned tokens the timm model names (those it still has)."""
        names = dict(self.model.named_parameters())
        return {f"model.{n}" for n in getattr(self.model, "no_weight_decay", set)() if n in names}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's own checkpointing of the backbone's blocks (the compressor has none)."""
        self.model.set_grad_checkpointing(enable)
