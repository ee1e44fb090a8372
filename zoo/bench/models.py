"""The two sides of every comparison: a zoo DeepSeek-OCR 2 with random weights and transformers'
``DeepseekOcr2ForConditionalGeneration`` holding the very same tensors, plus the pages and prompts
both are fed.

The transformers model is built on the meta device and its parameters are assigned from the zoo
state dict converted to transformers' names (``zoo.io.convert.transformers_checkpoint``), so the
pair costs one copy of the weights (plus transposed expert stacks) and any naming mistake fails
loudly (strict load).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from zoo.inputs.preprocessing import ImageBatch
from zoo.io.convert.official_checkpoint import (
    RELEASE_IMAGE_TOKEN_ID,
    official_config,
    zoo_to_official_tensors,
)
from zoo.io.convert.transformers_checkpoint import transformers_config, transformers_state_dict
from zoo.model.build import build_model
from zoo.model.ocr_model import OCRModel

if TYPE_CHECKING:  # imported where a twin is built: the fullsize suite's zoo process never does
    from transformers import DeepseekOcr2ForConditionalGeneration, GenerationConfig

SIX_CROP_PAGE = (1536, 1024)  # aspect 3:2 -> a 3 x 2 grid of 768 crops + the global view

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


def random_weight(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Random values of a sensible scale for the tensor ``name``: norm gains near 1, unit-variance
    linear outputs, visible position tables and queries (SAM's zero-initialised tables would
    hide work)."""
    noise = torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
    if "pos" in name or "queries" in name or "embed_tokens" in name:
        return 0.5 * noise
    return noise / math.prod(shape[1:]) ** 0.5


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Every parameter of ``module`` set to :func:`random_weight` values."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        parameter.copy_(random_weight(name, parameter.shape, generator))


def build_config(size: ModelSize) -> dict[str, Any]:
    """The ``build_model`` config of a DeepSeek-OCR 2 of ``size`` (v2 view mode)."""
    return {
        "encoder": {"name": "causal_flow", **size.encoder},
        "projector": {"name": "linear"},
        "decoder": {"name": "deepseek_moe", **size.decoder},
        "model": {"image_mode": "v2", "image_token_id": image_token_id(size)},
    }


def build_zoo_model(size: ModelSize, seed: int = 0) -> OCRModel:
    """A zoo DeepSeek-OCR 2 of ``size`` with random weights, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(build_config(size))
    randomize_(model, seed)
    return model.eval()


def write_random_release(
    folder: Path, size: ModelSize, shard_bytes: int = 2**30, seed: int = 0
) -> Path:
    """A DeepSeek-OCR 2 of ``size`` with :func:`random_weight` values in the released layout
    (``config.json``, bfloat16 tensors under the release's names, sharded with an index),
    written shard by shard: the whole model is never in memory at once."""
    build = build_config(size)
    with torch.device("meta"):
        names = zoo_to_official_tensors(build_model(build).state_dict(), "causal_flow")
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    weight_map: dict[str, int] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_size = total_size = 0
    for count, (name, meta) in enumerate(names.items(), start=1):
        shard[name] = random_weight(name, meta.shape, generator).to(torch.bfloat16)
        shard_size += shard[name].numel() * shard[name].element_size()
        total_size += shard[name].numel() * shard[name].element_size()
        weight_map[name] = len(files)
        if shard_size >= shard_bytes or count == len(names):
            files.append(folder / f"shard-{len(files)}.safetensors")
            save_file(shard, files[-1], metadata={"format": "pt"})
            shard, shard_size = {}, 0
    final = [f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    for file, name in zip(files, final, strict=True):
        file.rename(folder / name)
    index = {
        "metadata": {"total_size": total_size},
        "weight_map": {name: final[number] for name, number in weight_map.items()},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = official_config(build, image_token_id(size))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def transformers_twin(model: OCRModel) -> DeepseekOcr2ForConditionalGeneration:
    """transformers' DeepSeek-OCR 2 holding the zoo ``model``'s weights (shared, not copied,
    except the transposed expert stacks), in eval mode. A tensor the zoo keeps in another memory
    layout (the column-major LM head) is given to transformers contiguous, as its own loading
    would store it, so that each side runs with its own layout."""
    from transformers import DeepseekOcr2ForConditionalGeneration

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


def greedy_tokens(new_tokens: int) -> GenerationConfig:
    """transformers' generation settings for exactly ``new_tokens`` greedy tokens (no stop), as
    the zoo's side generates them."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )


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
