"""The decoders' output projection, laid out in memory for fast one-token decoding on CPU."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.layers import ThreadedLinear
from zoo.layers.linear import DtypeLaidOut, input_dim_contiguous, with_contiguous_dim


class ColumnMajorLMHead(ThreadedLinear, DtypeLaidOut):
    """``nn.Linear(hidden_size, vocab_size, bias=False)`` whose ``[vocab, hidden]`` weight is
    stored column-major in float32 (``weight.t()`` is the contiguous tensor) and row-major in
    bfloat16 / float16, multiplied through :func:`zoo.layers.linear.threaded_linear`.

    A decode step multiplies one row by this matrix, the largest the step reads (662 MB for
    DeepSeek-3B-MoE's 129k vocabulary in fp32). The float32 CPU BLAS streams the column-major
    layout faster for one row and as fast for many (``python -m zoo.bench ablations`` times
    whole decode steps against a row-major copy); torch's reduced-precision matrix-vector
    kernel wants the rows (:func:`zoo.layers.linear.input_dim_contiguous`). Shape, values and
    state-dict entries are those of the ``nn.Linear``; only the strides differ.
    ``load_state_dict`` copies into the existing layout, and a post-load hook lays the weight
    out again after ``assign=True`` loading replaced it.
    """

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__(hidden_size, vocab_size, bias=False)
        self.lay_out()
        self.register_load_state_dict_post_hook(_lay_out_after_load)

    def lay_out(self) -> None:
        """Store the weight as its precision prefers, unless it already is."""
        weight = self.weight
        contiguous_dim = -1 if input_dim_contiguous(weight.dtype) else -2
        laid_out = with_contiguous_dim(weight.detach(), contiguous_dim)
        if laid_out.stride() != weight.stride():
            self.weight = nn.Parameter(laid_out, requires_grad=weight.requires_grad)


def _lay_out_after_load(module: ColumnMajorLMHead, incompatible_keys: Any) -> None:
    module.lay_out()
