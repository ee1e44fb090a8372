"""One process of the ``fullsize`` suite: load one side from a released-layout folder and run one
page; prints one JSON object.

Sides: ``zoo`` (``zoo.from_pretrained`` in bfloat16, or with ``--quantize int8``) and
``transformers`` (``DeepseekOcr2ForConditionalGeneration.from_pretrained`` of the same folder
in bfloat16, given the folder's model as its config). Each runs in a process of its own, so its
peak RSS is its own and the zoo's process never imports transformers. The page (6 crops + the
global view, the views made once by the zoo's preprocessing and given to both sides) is timed
as greedy generation of one token (vision + prefill) ``warmup + repeats`` times, then once with
``page_tokens`` new tokens (no end-of-sequence stop)::

    python -m zoo.bench.fullsize_worker FOLDER --side zoo --quantize int8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.bench.measure import bytes_per_token, set_threads, tensor_bytes
from zoo.bench.models import SIX_CROP_PAGE, greedy_tokens, random_pages, transformers_pixels
from zoo.inputs.image_layout import num_image_tokens
from zoo.inputs.preprocessing import get_view_mode, preprocess
from zoo.io.folder import read_build_config
from zoo.io.load import peak_rss_bytes

DTYPE = torch.bfloat16
PROMPT_TEXT_TOKENS = 12
Generate = Callable[[int], torch.Tensor]


def page_prompt(image_token_id: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(views, input_ids, attention_mask)`` of one random page with 6 crops: its image
    placeholders, then a few random text tokens."""
    mode = get_view_mode("v2")
    images = preprocess(random_pages([SIX_CROP_PAGE]), mode).to(dtype=DTYPE)
    text = torch.randint(0, image_token_id, (PROMPT_TEXT_TOKENS,), generator=torch.Generator())
    placeholders = torch.full((num_image_tokens(*SIX_CROP_PAGE, mode),), image_token_id)
    input_ids = torch.cat((placeholders, text))[None]
    return images, input_ids, torch.ones_like(input_ids)


def zoo_side(
    folder: Path, quantize: str | None, page_tokens: int
) -> tuple[Generate, dict[str, Any]]:
    """The zoo model's page generation, what it holds and what a decode step reads (at the
    whole page's mean context)."""
    import zoo

    model = zoo.from_pretrained(folder, dtype=None if quantize else DTYPE, quantize=quantize)
    images, input_ids, mask = page_prompt(model.image_token_id)

    def generate(new_tokens: int) -> torch.Tensor:
        return model.generate(input_ids, images, mask, max_new_tokens=new_tokens)

    context = input_ids.shape[1] + page_tokens / 2
    info = {
        "weight_bytes": tensor_bytes(model),
        "decode_bytes_per_token": bytes_per_token(model.decoder, context),
    }
    return generate, info


def transformers_side(folder: Path) -> tuple[Generate, dict[str, Any]]:
    """transformers' page generation from the same folder."""
    from transformers import DeepseekOcr2ForConditionalGeneration

    from zoo.io.convert.transformers_checkpoint import transformers_config

    build = read_build_config(folder)
    image_token_id = build["model"]["image_token_id"]
    config = transformers_config(build, image_token_id)
    model = DeepseekOcr2ForConditionalGeneration.from_pretrained(folder, config=config, dtype=DTYPE)
    model.eval()
    images, input_ids, mask = page_prompt(image_token_id)
    pixels = transformers_pixels(images)

    def generate(new_tokens: int) -> torch.Tensor:
        settings = greedy_tokens(new_tokens)
        out = model.generate(
            input_ids=input_ids, attention_mask=mask, generation_config=settings, **pixels
        )
        return out[:, input_ids.shape[1] :]

    return generate, {"weight_bytes": tensor_bytes(model)}


def timed(call: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load, then the page runs; seconds, bytes and the generated tokens."""
    set_threads(args.threads)
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    if args.side == "zoo":
        generate, info = zoo_side(args.folder, args.quantize, args.page_tokens)
    else:
        generate, info = transformers_side(args.folder)
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_bytes()
    with torch.no_grad():
        page_s = [timed(lambda: generate(1))[0] for _ in range(args.warmup + args.repeats)]
        whole_s, tokens = timed(lambda: generate(args.page_tokens))
    return {
        "side": args.side,
        "quantize": args.quantize,
        "threads": args.threads,
        "load_s": load_s,
        "page_s": page_s[args.warmup :],
        "whole_page_s": whole_s,
        "page_tokens": args.page_tokens,
        "tokens": tokens[0].tolist(),
        "peak_rss_before_load": rss_before,
        "peak_rss_after_load": rss_loaded,
        "peak_rss": peak_rss_bytes(),
        **info,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.fullsize_worker")
    parser.add_argument("folder", type=Path, help="a released-layout checkpoint folder")
    parser.add_argument("--side", choices=["zoo", "transformers"], required=True)
    parser.add_argument("--quantize", choices=["int8"], default=None, help="zoo side only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--page-tokens", type=int, default=512)
    args = parser.parse_args(argv)
    if args.quantize and args.side != "zoo":
        parser.error("--quantize applies to the zoo side only")
    result = measure(args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
