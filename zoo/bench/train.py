"""Suite ``train``: one training step's forward and backward (next-token loss over the answer
tokens of a one-page prompt) at the tiny size and at the medium size (real widths, reduced
depth), each side as it trains: the zoo runs its LM head on the labelled positions only and adds
its MoE balance loss (a few hundred FLOPs); transformers computes every position's logits."""

from __future__ import annotations

from typing import Any

from zoo.bench.context import BenchContext, comparison, memory_comparison
from zoo.bench.measure import peak_tensor_bytes, time_interleaved
from zoo.bench.models import prompts, random_pages, transformers_pixels
from zoo.inputs.processor import IGNORE_INDEX

PAGE = (640, 640)  # fits one 1024 view: no crops
ANSWER_TOKENS = 64


def step_calls(ctx: BenchContext, size: str) -> dict[str, Any]:
    model, twin = ctx.pair(size)
    images = model.preprocess(random_pages([PAGE]))
    ids, mask = prompts(model, images, [ANSWER_TOKENS])
    labels = ids.masked_fill(ids == model.image_token_id, IGNORE_INDEX)
    pixels = transformers_pixels(images)

    def zoo() -> None:
        model.zero_grad(set_to_none=True)
        # as OCRLightningModule trains: the LM head only where a label is predicted
        out = model(ids, images, attention_mask=mask, labels=labels, logits="labelled")
        loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
        loss.backward()

    def transformers() -> None:
        twin.zero_grad(set_to_none=True)
        twin(input_ids=ids, attention_mask=mask, labels=labels, **pixels).loss.backward()

    return {"zoo": zoo, "transformers": transformers}


def run(ctx: BenchContext) -> dict[str, Any]:
    rows = []
    for size in ("tiny", "medium"):
        model, twin = ctx.pair(size)
        model.train(), twin.train()
        calls = step_calls(ctx, size)
        times = time_interleaved(calls, ctx.repeats, ctx.warmup)
        memory = {side: peak_tensor_bytes(call) for side, call in calls.items()}
        model.eval(), twin.eval()
        model.zero_grad(set_to_none=True), twin.zero_grad(set_to_none=True)
        name = ctx.size(size).name
        rows.append(
            comparison(f"{name}: forward + backward", times["zoo"], times["transformers"], "<= 0.8")
        )
        rows.append(
            memory_comparison(
                f"{name}: peak memory",
                memory["zoo"],
                memory["transformers"],
                "<= 1.0",
            )
        )
        if ctx.tiny:
            break
    return {"rows": rows}
