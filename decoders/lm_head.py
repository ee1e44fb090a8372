"""The decoders' output projection, laid out in memory for fast one-token decoding on CPU."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.layers import ThreadedLinear


class ColumnMajorLMHead(ThreadedLinear):
    """``nn.Linear(hidden_size, vocab_size, bias=False)`` whose ``[vocab, hidden]`` weight is
    stored column-major (``weight.t()`` is the contiguous tensor), multiplied through
    :func:`zoo.layers.linear.threaded_linear`.

    A decode step multiplies one row by this matrix, the largest the step reads (662 MB for
    DeepSeek-3B-MoE's 129k vocabulary in fp32). The CPU BLAS streams this layout faster for one
    row and as fast for many; ``python -m zoo.bench ablations`` times whole decode steps against
    a row-major copy. Shape, values and state-dict entries are those of the ``nn.Linear``; only
    the strides differ. ``load_state_dict`` copies into the existing layout, and a post-load
    hook lays the weight out again after ``assign=True`` loading (``zoo.from_pretrained``)
    replaced it.
    """

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__(hidden_size, vocab_size, bias=False)
        self.lay_out_column_major()
        self.register_load_state_dict_post_hook(_lay_out_after_load)

    def lay_out_column_major(self) -> None:
        """Store the weight column-major, unless it already is."""
        weight = self.weight
        if not weight.t().is_contiguous():
            self.weight = nn.Parameter(
                weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad
            )


def _lay_out_after_load(module: ColumnMajorLMHead, incompatible_keys: Any) -> None:
    module.lay_out_column_major()
