"""DeepSeek-V2's mixture-of-experts feed-forward: softmax top-k router, stacked routed experts run
with grouped matmuls, always-on shared experts, and the expert-level load-balancing loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import SwiGLU, matvec
from zoo.layers.int8 import SCALE_SUFFIX, Int8Weights, int8_linear
from zoo.layers.linear import (
    DtypeLaidOut,
    input_dim_contiguous,
    threaded_linear,
    with_contiguous_dim,
)

TOPK_METHODS = ("greedy", "group_limited_greedy")
AUX_LOSS_LEVELS = ("sequence", "batch")


@dataclass
class Routing:
    """Router decision for ``N`` tokens: full softmax ``scores`` ``[N, E]`` (float32, used by the
    balance loss), chosen ``expert_ids`` ``[N, k]`` and their mixing ``weights`` ``[N, k]``."""

    scores: torch.Tensor
    expert_ids: torch.Tensor
    weights: torch.Tensor


class TopKRouter(nn.Module):
    """Softmax gate over the routed experts with DeepSeek-V2's greedy or group-limited top-k.

    ``group_limited_greedy`` first keeps the ``topk_group`` groups (of ``n_group`` equal groups)
    with the best single expert score, then picks the top-k inside them. The chosen scores are
    renormalised to sum to one when ``norm_topk_prob`` (and k > 1), otherwise multiplied by
    ``routed_scaling_factor``, exactly as DeepSeek-V2's gate does.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        topk_method: str = "greedy",
        n_group: int = 1,
        topk_group: int = 1,
        norm_topk_prob: bool = False,
        routed_scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if topk_method not in TOPK_METHODS:
            raise ValueError(
                f"unknown topk_method {topk_method!r}; valid: {', '.join(TOPK_METHODS)}"
            )
        if not 0 < top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok={top_k} must be in 1..{num_experts}")
        if topk_method == "group_limited_greedy" and (
            num_experts % n_group or not 0 < topk_group <= n_group
        ):
            raise ValueError(
                f"group_limited_greedy needs n_group dividing {num_experts} experts and "
                f"1 <= topk_group <= n_group; got n_group={n_group}, topk_group={topk_group}"
            )
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        nn.init.normal_(self.weight, std=hidden_size**-0.5)
        self.top_k = top_k
        self.topk_method = topk_method
        self.n_group = n_group
        self.topk_group = topk_group
        self.norm_topk_prob = norm_topk_prob
        self.routed_scaling_factor = routed_scaling_factor

    def forward(self, hidden: torch.Tensor) -> Routing:
        """Route ``hidden`` ``[N, hidden_size]``."""
        scores = F.linear(hidden.float(), self.weight.float()).softmax(dim=-1)
        candidates = scores
        if self.topk_method == "group_limited_greedy":
            grouped = scores.unflatten(-1, (self.n_group, -1))
            best_groups = grouped.amax(dim=-1).topk(self.topk_group, dim=-1, sorted=False).indices
            keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool)
            keep.scatter_(-1, best_groups, True)
            candidates = grouped.masked_fill(~keep[..., None], 0.0).flatten(-2)
        weights, expert_ids = candidates.topk(self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            weights = weights * self.routed_scaling_factor
        return Routing(scores, expert_ids, weights)


def grouped_mm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` takes these operands: CPU (or CUDA in bf16), ``x``
    contiguous, ``weight`` contiguous in either of its last two dimensions, with rows a multiple
    of 16 bytes long, as its kernels require."""
    if not hasattr(torch, "_grouped_mm") or x.dtype != weight.dtype:
        return False
    if not (x.device.type == "cpu" or (x.device.type == "cuda" and x.dtype == torch.bfloat16)):
        return False
    contiguous_dim = -1 if weight.is_contiguous() else -2
    if contiguous_dim == -2 and not weight.transpose(-1, -2).is_contiguous():
        return False
    row_bytes = [x.shape[-1] * x.element_size(), weight.shape[contiguous_dim] * x.element_size()]
    return all(n % 16 == 0 for n in row_bytes) and x.is_contiguous()


def padded_grouped_matmul(
    x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """``x`` rows grouped by expert (``counts[e]`` rows each) times ``weight[e]`` ``[E, K, N]``,
    as one bmm over groups zero-padded to the largest; the fallback where grouped_mm is missing."""
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
    slot = torch.arange(x.shape[0], device=x.device) - starts[group]
    padded = x.new_zeros(counts.numel(), int(counts.max()), x.shape[-1])
    padded[group, slot] = x
    return torch.bmm(padded, weight)[group, slot]


def per_expert_matmul(
    x: torch.Tensor, counts: torch.Tensor, product: Callable[[int, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``product(e, rows)`` for each expert ``e`` that has rows (``counts[e]`` consecutive rows
    of ``x``), concatenated: a Python loop over the experts in use."""
    outputs, start = [], 0
    for expert, count in enumerate(counts.tolist()):
        if count:
            outputs.append(product(expert, x[start : start + count]))
            start += count
    return torch.cat(outputs)


# Up to this many (token, expert) rows, output-major experts are multiplied one expert at a time:
# a decode step (6 rows a token) then reads each chosen expert through torch's matrix-vector
# kernel, 1.2-1.3x faster than one grouped matmul over bfloat16 experts of the release's size
# here (one thread); at 12 rows the two are within 10%.
ROWS_PER_EXPERT_LOOP = 16


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` sorted by group, ``counts[e]`` of them for ``weight[e]`` (``[E, K, N]``)."""
    output_major = not weight.is_contiguous() and weight.transpose(-1, -2).is_contiguous()
    if output_major and x.device.type == "cpu" and x.shape[0] <= ROWS_PER_EXPERT_LOOP:
        return per_expert_matmul(x, counts, lambda e, rows: threaded_linear(rows, weight[e].t()))
    if grouped_mm_supported(x, weight):
        offsets = torch.cumsum(counts, 0, dtype=torch.int32)
        return torch._grouped_mm(x, weight, offs=offsets)
    return padded_grouped_matmul(x, weight, counts)


class ExpertStack(nn.Module):
    """``num_experts`` SwiGLU experts stored as two stacks, ``w_gate_up`` ``[E, hidden, 2 * I]``
    (each expert's gate then up projection) and ``w_down`` ``[E, I, hidden]``, run without a
    loop over tokens: the (token, expert) pairs are sorted by expert and each projection is one
    grouped product over the experts' row blocks (:meth:`expert_matmul`, which a subclass
    defines for its way of storing the stacks)."""

    def __init__(self, num_experts: int, intermediate_size: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size

    def expert_matmul(self, name: str, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Rows of ``x`` grouped by expert (``counts[e]`` each) times stack ``name``'s experts."""
        raise NotImplementedError

    def stack_scales(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The per-output scales of ``w_gate_up`` and ``w_down`` for int8 stacks, else ``None``."""
        return None

    def output_major_stacks(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None] | None:
        """``(gate_up [E, 2I, hidden], down [E, hidden, I], scales)`` as the contiguous
        bfloat16 (or int8 with bfloat16 scales) tensors :func:`zoo.layers.matvec.moe_experts`
        takes, or ``None`` where the stacks are not stored so."""
        gate_up, down = (getattr(self, name).transpose(-1, -2) for name in ("w_gate_up", "w_down"))
        scales = self.stack_scales()
        if scales is not None and any(scale.dtype != torch.bfloat16 for scale in scales):
            return None
        dtype = torch.bfloat16 if scales is None else torch.int8
        usable = gate_up.is_contiguous() and down.is_contiguous() and gate_up.dtype == dtype
        return (gate_up, down, scales) if usable and down.dtype == dtype else None

    def forward(
        self, hidden: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Weighted sum of the chosen experts' outputs for ``hidden`` ``[N, hidden_size]``: one
        token (a decode step) as one call of the zoo's CPU kernel where it runs, else sorted
        into grouped products."""
        stacks = self.output_major_stacks() if matvec.runs_here(hidden) else None
        if stacks is not None:
            return matvec.moe_experts(hidden, stacks[0], stacks[1], expert_ids, weights, stacks[2])
        top_k = expert_ids.shape[-1]
        pair_experts = expert_ids.reshape(-1)
        order = pair_experts.argsort(stable=True)
        token_of_pair = order // top_k
        counts = torch.bincount(pair_experts, minlength=self.num_experts)
        rows = hidden.index_select(0, token_of_pair)
        gate, up = self.expert_matmul("w_gate_up", rows, counts).split(
            self.intermediate_size, dim=-1
        )
        expert_out = self.expert_matmul("w_down", F.silu(gate) * up, counts)
        mixed = expert_out.float() * weights.reshape(-1).index_select(0, order)[:, None]
        out = torch.zeros(hidden.shape, dtype=mixed.dtype, device=hidden.device)
        return out.index_add_(0, token_of_pair, mixed).to(hidden.dtype)


class RoutedExperts(ExpertStack, DtypeLaidOut):
    """The routed experts as two stacked parameters (see :class:`ExpertStack`).

    The stacks' shapes are input-major (``x @ w``); their memory layout follows the precision
    (:func:`zoo.layers.linear.input_dim_contiguous`): in float32 input-major, which
    ``torch._grouped_mm`` runs 1.3-1.5x faster than the transposed layout for a single token
    and as fast for thousands; in bfloat16 output-major (each expert's ``[out, in]`` matrix
    contiguous, as the released checkpoints store it), where a decode step reads each chosen
    expert through torch's matrix-vector kernel and a long prompt goes through
    ``torch._grouped_mm`` as fast as input-major.
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__(num_experts, intermediate_size)
        self.w_gate_up = nn.Parameter(torch.empty(num_experts, hidden_size, 2 * intermediate_size))
        self.w_down = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))
        nn.init.normal_(self.w_gate_up, std=hidden_size**-0.5)
        nn.init.normal_(self.w_down, std=intermediate_size**-0.5)
        self.lay_out()
        self.register_load_state_dict_post_hook(_lay_out_after_load)

    def lay_out(self) -> None:
        """Store both stacks as their precision prefers (see the class doc)."""
        for name in ("w_gate_up", "w_down"):
            stack = getattr(self, name)
            contiguous_dim = -2 if input_dim_contiguous(stack.dtype) else -1
            laid_out = with_contiguous_dim(stack.detach(), contiguous_dim)
            if laid_out.stride() != stack.stride():
                setattr(self, name, nn.Parameter(laid_out, requires_grad=stack.requires_grad))

    def expert_matmul(self, name: str, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return grouped_matmul(x, getattr(self, name), counts)


def _lay_out_after_load(module: RoutedExperts, incompatible_keys: object) -> None:
    module.lay_out()


class Int8RoutedExperts(ExpertStack, Int8Weights):
    """The routed experts with weight-only int8 stacks (:mod:`zoo.layers.int8`): ``w_gate_up``
    and ``w_down`` as int8 buffers of the float shapes, output-major, each with a
    per-output-channel ``<name>_scale`` (``[E, 2 * I]``, ``[E, hidden]``). Each expert in use is
    multiplied on its own (:func:`zoo.layers.int8.int8_linear`): there is no grouped int8
    product in torch."""

    input_dims = {"w_gate_up": -2, "w_down": -2}

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        scale_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_experts, intermediate_size)
        shapes = {
            "w_gate_up": (num_experts, hidden_size, 2 * intermediate_size),
            "w_down": (num_experts, intermediate_size, hidden_size),
        }
        self.register_int8_weights(shapes, scale_dtype, device)

    @classmethod
    def from_float(cls, experts: RoutedExperts) -> Int8RoutedExperts:
        """``experts`` quantized (on the meta device: an empty module of the same sizes)."""
        hidden_size, intermediate_size = experts.w_down.shape[2], experts.intermediate_size
        quantized = cls(
            experts.num_experts, hidden_size, intermediate_size, device=experts.w_down.device
        )
        quantized.quantize_from(experts)
        return quantized

    def expert_matmul(self, name: str, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        weight, scale = getattr(self, name), getattr(self, name + SCALE_SUFFIX)
        return per_expert_matmul(
            x, counts, lambda e, rows: int8_linear(rows, weight[e].t(), scale[e])
        )

    def stack_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_gate_up_scale, self.w_down_scale


def expert_balance_loss(
    scores: torch.Tensor,
    expert_ids: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    level: str = "sequence",
) -> torch.Tensor:
    """DeepSeek-V2's expert-level balance loss ``sum_i f_i * P_i`` (before the alpha weight).

    ``scores`` ``[B, T, E]`` are the router's softmax, ``expert_ids`` ``[B, T, k]`` its choice;
    ``f_i = E / (k T) * (times expert i was chosen)`` and ``P_i`` the mean score of expert i,
    per sequence then averaged (``level="sequence"``) or over the whole batch (``"batch"``).
    Tokens where ``token_mask`` is 0 (padding) are left out. It equals 1 when the mean scores are
    uniform and grows as routing concentrates on experts that also score high.
    """
    if level not in AUX_LOSS_LEVELS:
        raise ValueError(f"unknown aux loss level {level!r}; valid: {', '.join(AUX_LOSS_LEVELS)}")
    batch, length, num_experts = scores.shape
    top_k = expert_ids.shape[-1]
    if token_mask is None:
        token_mask = scores.new_ones(batch, length)
    token_mask = token_mask.to(scores.dtype)
    choices = token_mask[..., None].expand(-1, -1, top_k).reshape(batch, -1)
    chosen = scores.new_zeros(batch, num_experts).scatter_add_(
        1, expert_ids.reshape(batch, -1), choices
    )
    score_sums = (scores * token_mask[..., None]).sum(dim=1)
    tokens = token_mask.sum(dim=1)
    if level == "batch":
        chosen, score_sums, tokens = (t.sum(0, keepdim=True) for t in (chosen, score_sums, tokens))
    tokens = tokens.clamp(min=1)[:, None]
    fraction = chosen * num_experts / (top_k * tokens)
    mean_score = score_sums / tokens
    return (fraction * mean_score).sum(dim=-1).mean()


class MoEFeedForward(nn.Module):
    """DeepSeekMoE block: routed experts mixed by the router, plus shared experts every token uses.

    The ``n_shared_experts`` shared experts are one SwiGLU of width ``n_shared * I``, as in the
    checkpoints. In training, with ``aux_loss_alpha > 0``, the block also returns
    ``aux_loss_alpha * expert_balance_loss``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        intermediate_size: int,
        top_k: int,
        n_shared_experts: int,
        topk_method: str = "greedy",
        n_group: int = 1,
        topk_group: int = 1,
        norm_topk_prob: bool = False,
        routed_scaling_factor: float = 1.0,
        aux_loss_alpha: float = 0.0,
        aux_loss_level: str = "sequence",
    ) -> None:
        super().__init__()
        if aux_loss_level not in AUX_LOSS_LEVELS:
            raise ValueError(
                f"unknown aux_loss_level {aux_loss_level!r}; valid: {', '.join(AUX_LOSS_LEVELS)}"
            )
        self.router = TopKRouter(
            hidden_size,
            num_experts,
            top_k,
            topk_method,
            n_group,
            topk_group,
            norm_topk_prob,
            routed_scaling_factor,
        )
        self.experts = RoutedExperts(num_experts, hidden_size, intermediate_size)
        self.shared_experts = (
            SwiGLU(hidden_size, intermediate_size * n_shared_experts) if n_shared_experts else None
        )
        self.aux_loss_alpha = aux_loss_alpha
        self.aux_loss_level = aux_loss_level

    def forward(
        self, hidden: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden`` ``[B, T, hidden_size]`` -> (output, weighted balance loss or ``None``)."""
        batch, length, width = hidden.shape
        routing = self.router(hidden.reshape(-1, width))
        out = self.experts(hidden.reshape(-1, width), routing.expert_ids, routing.weights)
        out = out.view_as(hidden)
        if self.shared_experts is not None:
            out = out + self.shared_experts(hidden)
        aux_loss = None
        if self.training and self.aux_loss_alpha > 0:
            aux_loss = self.aux_loss_alpha * expert_balance_loss(
                routing.scores.view(batch, length, -1),
                routing.expert_ids.view(batch, length, -1),
                token_mask,
                self.aux_loss_level,
            )
        return out, aux_loss
