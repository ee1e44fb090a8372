"""The two sides of every comparison: a zoo DeepSeek-OCR 2 with random weights and transformers'
``DeepseekOcr2ForConditionalGeneration`` holding the very same tensors, plus the pages and prompts
both are fed.

The transformers model is built on the meta device and its parameters are assigned from the zoo
state dict converted to transformers' names (``zoo.io.convert.transformers_checkpoint``), so the
pair costs one copy of the weights (plus transposed expert stacks) and any naming mistake fails
loudly (strict load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import DeepseekOcr2ForConditionalGeneration

from zoo.inputs.preprocessing import ImageBatch
from zoo.io.convert.official_checkpoint import RELEASE_IMAGE_TOKEN_ID
from zoo.io.convert.transformers_checkpoint import transformers_config, transformers_state_dict
from zoo.model.build import build_model
from zoo.model.ocr_model import OCRModel

TINY_SAM: dict[str, Any] = {
    "name": "sam_vitb",
    "width": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": (1,),
    "neck_dim": 16,
    "downsample_channels": (24, 32),
}
TINY_ENCODER: dict[str, Any] = {
    "tokenizer": TINY_SAM,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
}
# Real widths (SAM-B, Qwen2-0.5B shape) with a fraction of the depth.
MEDIUM_ENCODER: dict[str, Any] = {
    "tokenizer": {
        "name": "sam_vitb",
        "depth": 2,
        "global_attn_indexes": (1,),
        "downsample_channels": (512, 896),
    },
    "num_layers": 2,
}
FULL_ENCODER: dict[str, Any] = {}
TINY_DECODER: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "n_routed_experts": 8,
    "moe_intermediate_size": 32,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
}


def reduced_decoder(num_layers: int) -> dict[str, Any]:
    """DeepSeek-3B-MoE at its real widths (vocab, experts, heads) with ``num_layers`` layers:
    layer 0 dense, the others MoE, as in the release."""
    return {"num_hidden_layers": num_layers}


@dataclass(frozen=True)
class ModelSize:
    """Constructor arguments of one benchmarked model: encoder and decoder keyword arguments."""

    name: str
    encoder: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        layers = self.decoder.get("num_hidden_layers", 12)
        width = self.decoder.get("hidden_size", 1280)
        encoder = "tiny" if self.encoder.get("hidden_size") == 32 else "real-width"
        depth = self.encoder.get("num_layers", 24)
        return (
            f"{self.name}: {encoder} encoder ({depth} LM layers), decoder {layers} layers of "
            f"width {width}"
        )


def image_token_id(size: ModelSize) -> int:
    vocab = size.decoder.get("vocab_size", 129280)
    # the release's <image> id; tiny vocabularies use their last id
    return RELEASE_IMAGE_TOKEN_ID if RELEASE_IMAGE_TOKEN_ID < vocab else vocab - 1


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Random weights of a sensible scale: norm gains near 1, unit-variance linear outputs,
    visible position tables and queries (SAM's zero-initialised tables would hide work)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if parameter.ndim == 1:
            parameter.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
        elif "pos" in name or "queries" in name or "embed_tokens" in name:
            parameter.copy_(0.5 * noise)
        else:
            parameter.copy_(noise / parameter[0].numel() ** 0.5)


def build_zoo_model(size: ModelSize, seed: int = 0) -> OCRModel:
    """A zoo DeepSeek-OCR 2 of ``size`` with random weights, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(
        {
            "encoder": {"name": "causal_flow", **size.encoder},
            "projector": {"name": "linear"},
            "decoder": {"name": "deepseek_moe", **size.decoder},
            "model": {"image_mode": "v2", "image_token_id": image_token_id(size)},
        }
    )
    randomize_(model, seed)
    return model.eval()


def transformers_twin(model: OCRModel) -> DeepseekOcr2ForConditionalGeneration:
    """transformers' DeepSeek-OCR 2 holding the zoo ``model``'s weights (shared, not copied,
    except the transposed expert stacks), in eval mode. A tensor the zoo keeps in another memory
    layout (the column-major LM head) is given to transformers contiguous, as its own loading
    would store it, so that each side runs with its own layout."""
    with torch.device("meta"):
        twin = DeepseekOcr2ForConditionalGeneration(
            transformers_config(model.build_config, model.image_token_id)
        )
    tensors = {name: t.contiguous() for name, t in transformers_state_dict(model).items()}
    twin.load_state_dict(tensors, strict=True, assign=True)
    # Non-persistent rotary tables are not in any state dict; take the zoo's (same formula).
    vision_rotary = twin.model.vision_tower.vision_encoder.rotary_emb
    text_rotary = twin.model.language_model.rotary_emb
    for rotary, source in (
        (vision_rotary, model.encoder.lm.rotary),
        (text_rotary, model.decoder.rotary),
    ):
        rotary.inv_freq = source.inv_freq.clone()
        rotary.original_inv_freq = source.inv_freq.clone()
    leftover = [name for name, t in [*twin.named_parameters(), *twin.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"transformers twin has tensors left on the meta device: {leftover}")
    return twin.eval()


def random_pages(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    """Noise images of the given ``(width, height)`` sizes."""
    generator = torch.Generator().manual_seed(seed)
    pages = []
    for width, height in sizes:
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
        pages.append(Image.fromarray(pixels.numpy()))
    return pages


def transformers_pixels(images: ImageBatch) -> dict[str, Any]:
    """The zoo's views of a batch, as ``DeepseekOcr2ForConditionalGeneration`` takes them."""
    return {
        "pixel_values": images.global_views,
        "pixel_values_local": images.local_views,
        "num_local_patches": [cols * rows for cols, rows in images.crop_grids],
    }


def prompts(
    model: OCRModel, images: ImageBatch, text_tokens: list[int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)``: per page, its image placeholders then
    ``text_tokens[i]`` random text ids (the official prompt puts the image first)."""
    generator = torch.Generator().manual_seed(seed)
    tokens_per_page = image_token_counts(model, images)
    rows = []
    for n_image, n_text in zip(tokens_per_page, text_tokens, strict=True):
        text = torch.randint(0, model.image_token_id, (n_text,), generator=generator)
        rows.append(torch.cat([torch.full((n_image,), model.image_token_id), text]))
    length = max(row.numel() for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, length - row.numel() :] = row
        mask[index, length - row.numel() :] = 1
    return ids, mask


def image_token_counts(model: OCRModel, images: ImageBatch) -> list[int]:
    """Placeholder tokens of each page of ``images``: its crops, its global view, a separator."""
    encoder = model.encoder
    global_tokens = encoder.num_tokens(images.global_views.shape[-1])
    local_tokens = (
        0 if images.local_views is None else encoder.num_tokens(images.local_views.shape[-1])
    )
    return [cols * rows * local_tokens + global_tokens + 1 for cols, rows in images.crop_grids]


@torch.no_grad()
def prompt_embeddings(
    model: OCRModel, page_size: tuple[int, int], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs_embeds [1, length, hidden], attention_mask)`` of one page's prompt: its image
    embeddings (encoded once by the zoo model) then random text up to ``length`` tokens."""
    images = model.preprocess(random_pages([page_size]))
    n_image = image_token_counts(model, images)[0]
    if n_image > length:
        raise ValueError(f"a {page_size} page takes {n_image} image tokens > length {length}")
    ids, mask = prompts(model, images, [length - n_image])
    return model.embed_inputs(ids, images), mask
