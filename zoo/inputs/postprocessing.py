"""A model answer -> the markdown that is written and scored, under a named preset.

``grounding`` (the zoo's default) removes the ``<|ref|>...<|/ref|><|det|>...<|/det|>`` tags and
keeps everything else. ``official_v2`` and ``official_v1`` repeat, step for step, what the
official OmniDocBench scripts do to an answer before writing it (DeepSeek-OCR-2
``DeepSeek-OCR2-vllm/run_dpsk_ocr2_eval_batch.py`` and DeepSeek-OCR
``DeepSeek-OCR-vllm/run_dpsk_ocr_eval_batch.py``), so that a score can be compared with the
published one: equation tags ``\\quad (n)`` are dropped inside one-line ``\\[ ... \\]``
formulas, then each reference group is removed, and after each removal runs of 4 and then 3
newlines become 2 (v1 also drops ``<center>`` tags there). As in the scripts, an answer without
any reference group keeps its newlines and (v1) its ``<center>`` tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from zoo.inputs.grounding import strip_grounding

# As the scripts: no DOTALL for formulas (one line), DOTALL for the reference groups.
_DISPLAY_FORMULA = re.compile(r"\\\[(.*?)\\\]")
_EQUATION_TAG = re.compile(r"\\quad\s*\([^)]*\)")
_REFERENCE_GROUP = re.compile(r"<\|ref\|>.*?<\|/ref\|><\|det\|>.*?<\|/det\|>", re.DOTALL)


def _without_equation_tags(text: str) -> str:
    """``\\[ x \\quad (3) \\]`` -> ``\\[x\\]``: tags removed, the formula stripped."""
    return _DISPLAY_FORMULA.sub(
        lambda match: r"\[" + _EQUATION_TAG.sub("", match.group(1)).strip() + r"\]", text
    )


def official_postprocess(answer: str, drop_center: bool = False) -> str:
    """The official scripts' clean-up of an answer (``drop_center``: DeepSeek-OCR v1's)."""
    text = _without_equation_tags(answer)
    for group in _REFERENCE_GROUP.findall(text):
        text = text.replace(group, "").replace("\n\n\n\n", "\n\n").replace("\n\n\n", "\n\n")
        if drop_center:
            text = text.replace("<center>", "").replace("</center>", "")
    return text


POSTPROCESSORS: dict[str, Callable[[str], str]] = {
    "grounding": strip_grounding,
    "official_v2": official_postprocess,
    "official_v1": lambda answer: official_postprocess(answer, drop_center=True),
}


def postprocess(answer: str, preset: str) -> str:
    """``answer`` cleaned by the named preset (see the module docstring)."""
    if preset not in POSTPROCESSORS:
        raise ValueError(
            f"unknown post-processing {preset!r}; valid presets: {sorted(POSTPROCESSORS)}"
        )
    return POSTPROCESSORS[preset](answer)
