"""Attention with SAM's decomposed relative-position bias, lean in memory on CPU: the
specialisation of the attention core for SAM's blocks.

The bias of query ``(y, x)`` for key ``(ky, kx)`` is ``by_row[y, x, ky] + by_col[y, x, kx]``.
SDPA passes a gradient to a float mask only through its math path, which keeps the bias, the
scores and their softmax as separate ``[N, heads, L, L]`` tensors and allocates more of them in
backward: 768 MiB each for SAM-B's 4096-token global blocks (12 heads). Here the bias is built
in one buffer, the scaled scores are added into it and its softmax is taken in place, and that
one buffer is all backward keeps; backward forms the softmax gradient in place too. The row and
column factors get their gradients as sums of the score gradient, so the bias needs none.
Fresh buffers of that size cost as much to fault in as to fill, hence the in-place steps.

Inference needs no gradient. In float32 :func:`relpos_sdpa` hands SDPA one block of query rows
at a time with its block of the bias (encoding a 1024 view: peak 173 MiB instead of 876). In
bfloat16 and float16 :func:`folded_relpos_sdpa` folds the bias into the dot product instead, so
SDPA runs without a mask: 1.2-2x faster on SAM-B's blocks here, and the bias is summed in SDPA's
float32 accumulator rather than rounded to 8 bits first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.layers.attention import sdpa_attention
from zoo.layers.linear import REDUCED_PRECISION


def relative_position_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """``[size, size, D]`` embeddings of the offsets ``q - k`` along one grid axis of ``size``.

    ``rel_pos`` holds one row per offset ``-(L-1)..(L-1)``; when the grid side differs from the
    one it was trained for it is linearly resized (float32) to ``2 * size - 1`` rows first.
    """
    offsets = 2 * size - 1
    if rel_pos.shape[0] != offsets:
        resized = F.interpolate(rel_pos.float().T[None], size=offsets, mode="linear")
        rel_pos = resized[0].T.to(rel_pos.dtype)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def relative_position_factors(
    query: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bias's row and column terms ``[N, heads, h, w, h]`` and ``[N, heads, h, w, w]``
    from unscaled queries ``[N, heads, h*w, D]``, contiguous (einsum may permute strides)."""
    rows = relative_position_table(rel_pos_h, height)
    cols = relative_position_table(rel_pos_w, width)
    grid_query = query.unflatten(2, (height, width))
    by_row = torch.einsum("nhyxc,ykc->nhyxk", grid_query, rows).contiguous()
    by_col = torch.einsum("nhyxc,xkc->nhyxk", grid_query, cols).contiguous()
    return by_row, by_col


class DecomposedRelPosAttention(torch.autograd.Function):
    """``softmax(q k^T / sqrt(D) + bias) v`` for ``[N, heads, L, D]`` inputs, ``L = h * w``,
    with ``by_row`` ``[N, heads, h, w, h]`` and ``by_col`` ``[N, heads, h, w, w]``."""

    @staticmethod
    def forward(ctx, query, key, value, by_row, by_col) -> torch.Tensor:  # tensors: class doc
        count, heads, length, dim = query.shape
        scale = dim**-0.5
        query, key, value = (t.reshape(count * heads, length, dim) for t in (query, key, value))
        probs = (by_row[..., :, None] + by_col[..., None, :]).view(count * heads, length, length)
        probs.baddbmm_(query, key.transpose(1, 2), alpha=scale)
        torch.ops.aten._softmax.out(probs, -1, False, out=probs)
        out = torch.bmm(probs, value)
        ctx.save_for_backward(query, key, value, probs, out)
        ctx.scale = scale
        ctx.factor_shapes = (by_row.shape, by_col.shape)
        return out.view(count, heads, length, dim)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, probs, out = ctx.saved_tensors
        row_shape, col_shape = ctx.factor_shapes
        grad_out = grad_out.reshape(out.shape)
        grad_value = torch.bmm(probs.transpose(1, 2), grad_out)
        grad_scores = torch.bmm(grad_out, value.transpose(1, 2))
        # softmax backward, in place: P * (dP - sum_j P_ij dP_ij), the sum being dO_i . O_i
        grad_scores.sub_((grad_out * out).sum(-1, keepdim=True)).mul_(probs)
        grad_query = torch.bmm(grad_scores, key).mul_(ctx.scale)
        grad_key = torch.bmm(grad_scores.transpose(1, 2), query).mul_(ctx.scale)
        grid = grad_scores.view(*row_shape, col_shape[-1])
        grad_by_row = grid.sum(-1) if ctx.needs_input_grad[3] else None
        grad_by_col = grid.sum(-2) if ctx.needs_input_grad[4] else None
        shape = (*row_shape[:2], -1, query.shape[-1])
        return (
            grad_query.view(shape),
            grad_key.view(shape),
            grad_value.view(shape),
            grad_by_row,
            grad_by_col,
        )


# Bias blocks of CPU inference: under glibc's 32 MiB mmap ceiling, so they are reused from the
# heap instead of faulted in afresh.
BIAS_BLOCK_BYTES = 16 * 2**20


def relpos_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    by_row: torch.Tensor,
    by_col: torch.Tensor,
    block_bytes: int | None = None,
) -> torch.Tensor:
    """SDPA given the bias as an additive mask: whole (CUDA, where SDPA's kernels also give it
    its gradient), or built for one block of query rows at a time, at most ``block_bytes``
    each, so no ``[N, heads, L, L]`` bias ever exists (CPU inference)."""
    count, heads, length, _ = query.shape
    rows = length
    if block_bytes is not None:
        rows = max(1, block_bytes // (count * heads * length * query.element_size()))
    by_row, by_col = by_row.flatten(2, 3), by_col.flatten(2, 3)
    blocks = []
    for start in range(0, length, rows):
        block = slice(start, start + rows)
        bias = (by_row[:, :, block, :, None] + by_col[:, :, block, None, :]).flatten(-2)
        blocks.append(sdpa_attention(query[:, :, block], key, value, bias))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)


# Head width of the folded product, padded to a multiple of this: SDPA's CPU kernel ran the
# 92-wide heads of 14 x 14 windows 1.3x faster padded to 96 (multiples of 32 and 64 were slower
# on 48 x 48 grids).
FOLDED_HEAD_MULTIPLE = 16


def folded_relpos_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    by_row: torch.Tensor,
    by_col: torch.Tensor,
) -> torch.Tensor:
    """The same attention as :func:`relpos_sdpa` as one unmasked SDPA over wider heads.

    The bias of query ``i`` for key ``(ky, kx)`` is ``by_row[i, ky] + by_col[i, kx]``: a dot
    product of ``[by_row[i], by_col[i]]`` with the key's one-hot row and column. Appending those
    to the (pre-scaled) query and key makes ``q' . k'`` the biased score; the value is
    zero-padded to the same width (SDPA's fast kernels want one width) and the padding cut off.
    """
    count, heads, length, dim = query.shape
    height, width = by_row.shape[-1], by_col.shape[-1]
    padding = -(dim + height + width) % FOLDED_HEAD_MULTIPLE
    query = torch.cat(
        (
            query * dim**-0.5,
            by_row.flatten(2, 3),
            by_col.flatten(2, 3),
            query.new_zeros(count, heads, length, padding),
        ),
        dim=-1,
    )
    key_row = torch.arange(height, device=key.device).repeat_interleave(width)
    key_col = torch.arange(width, device=key.device).repeat(height)
    selectors = torch.cat(
        (
            F.one_hot(key_row, height),
            F.one_hot(key_col, width),
            key_row.new_zeros(length, padding),
        ),
        dim=-1,
    ).to(key.dtype)
    key = torch.cat((key, selectors.expand(count, heads, length, -1)), dim=-1)
    value = F.pad(value, (0, query.shape[-1] - dim))
    return sdpa_attention(query, key, value, None, scale=1.0)[..., :dim]


def relpos_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Attention over ``[N, heads, h*w, D]`` heads of an ``h x w`` grid whose score of query
    ``(qh, qw)`` for key ``(kh, kw)`` gets ``q . Rh[qh - kh] + q . Rw[qw - kw]`` added.

    On CUDA the whole bias goes to SDPA as an additive mask; on CPU the two factors go to
    :class:`DecomposedRelPosAttention` in training, and in inference to SDPA folded into the
    heads in reduced precision (:func:`folded_relpos_sdpa`) or block by block in float32
    (:func:`relpos_sdpa`); both spare the ``[L, L]`` bias.
    """
    by_row, by_col = relative_position_factors(query, rel_pos_h, rel_pos_w, *grid)
    if query.device.type == "cpu" and by_row.requires_grad:
        return DecomposedRelPosAttention.apply(query, key, value, by_row, by_col)
    if query.device.type == "cpu" and query.dtype in REDUCED_PRECISION:
        return folded_relpos_sdpa(query, key, value, by_row, by_col)
    blocks = BIAS_BLOCK_BYTES if query.device.type == "cpu" else None
    return relpos_sdpa(query, key, value, by_row, by_col, blocks)
