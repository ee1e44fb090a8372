"""The official inference recipes: the generation presets, the post-processing of an answer,
the guard's exempt tokens resolved from the tokenizer."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from zoo.inputs.grounding import strip_grounding
from zoo.inputs.postprocessing import official_postprocess, postprocess
from zoo.inputs.preprocessing import get_view_mode
from zoo.inputs.prompts import MARKDOWN_PROMPT
from zoo.inputs.text_tokenizer import ByteTokenizer
from zoo.model.config import to_plain
from zoo.model.inference import GenerationSettings, single_token_ids
from zoo.ocr import parse_args

GROUNDED = (
    "<|ref|>title<|/ref|><|det|>[[10, 20, 300, 40]]<|/det|>\n# Results\n\n\n\n"
    "<|ref|>equation<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\n\\[ E = mc^2 \\quad (3) \\]\n\n\n"
    "<|ref|>table<|/ref|><|det|>[[5, 6, 7, 8]]<|/det|>\n<center><table><tr><td>1</td></tr>"
    "</table></center>\n"
)


def test_official_postprocessing_of_a_grounded_answer() -> None:
    # Tags removed, the equation tag dropped inside \[ \], 4 and 3 newlines collapsed to 2.
    v2 = "\n# Results\n\n\\[E = mc^2\\]\n\n<center><table><tr><td>1</td></tr></table></center>\n"
    assert postprocess(GROUNDED, "official_v2") == v2
    assert postprocess(GROUNDED, "official_v1") == v2.replace("<center>", "").replace(
        "</center>", ""
    )


def test_official_postprocessing_keeps_what_the_scripts_keep() -> None:
    # No reference group: newlines and <center> stay, as in the scripts' loop over groups.
    plain = "a\n\n\n\nb <center>c</center>"
    assert postprocess(plain, "official_v1") == plain
    # The tag pattern is one line only, and \quad without a parenthesis stays.
    assert official_postprocess("\\[ a \\quad b \\]") == "\\[a \\quad b\\]"
    assert official_postprocess("\\[ a\n\\quad (1) \\]") == "\\[ a\n\\quad (1) \\]"
    # A group spanning lines is still removed (DOTALL); one pass of the two collapses leaves
    # 3 of 6 newlines, as the scripts do.
    grouped = "x<|ref|>a\nb<|/ref|><|det|>[[1,\n2]]<|/det|>" + "\n" * 6 + "y"
    assert official_postprocess(grouped) == "x\n\n\ny"


def test_postprocessing_presets_are_named() -> None:
    assert postprocess(GROUNDED, "grounding") == strip_grounding(GROUNDED)
    with pytest.raises(ValueError, match="valid presets"):
        postprocess("x", "official_v3")


@pytest.mark.parametrize("name", ["official_v2", "official_v1"])
def test_generation_presets_compose_for_zoo_evaluate(name: str) -> None:
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("eval", overrides=[f"generation={name}"])
    settings = GenerationSettings.from_config(to_plain(cfg.generation))
    assert settings == GenerationSettings.preset(name)
    assert settings.to_dict()["prompt"] == MARKDOWN_PROMPT
    assert (settings.max_new_tokens, settings.no_repeat_ngram_size) == (8192, 40)
    assert (settings.ngram_window, settings.ngram_exempt) == (90, ("<td>", "</td>"))
    mode = get_view_mode(settings.view_mode)
    tiles = (mode.global_size, mode.local_size, mode.min_crops, mode.max_crops)
    assert tiles == ((1024, 768, 2, 6) if name == "official_v2" else (1024, 640, 2, 6))
    assert mode.newlines == (name == "official_v1") and settings.postprocess == name


def test_zoo_ocr_takes_a_preset_and_overrides() -> None:
    args = parse_args(["in", "--checkpoint", "x", "--generation", "official_v1"])
    assert args.settings == GenerationSettings.preset("official_v1")
    args = parse_args(["in", "--checkpoint", "x", "--max-new-tokens", "16", "--prompt", "free"])
    assert args.settings.name == "default" and args.settings.max_new_tokens == 16
    assert args.prompt == "<image>\nFree OCR."
    with pytest.raises(SystemExit):
        parse_args(["in", "--checkpoint", "x", "--generation", "official_v3"])


def test_unknown_generation_settings_are_named() -> None:
    with pytest.raises(ValueError, match="unknown settings \\['temprature'\\]"):
        GenerationSettings.from_config({"temprature": 0})


class _AddedTokens(ByteTokenizer):
    """The byte tokenizer plus two added tokens, as the released tokenizer adds table tags."""

    ADDED = {"<td>": 128821, "</td>": 128822}

    def encode(self, text: str) -> list[int]:
        return [self.ADDED[text]] if text in self.ADDED else super().encode(text)


def test_exempt_tokens_are_resolved_from_the_tokenizer() -> None:
    assert single_token_ids(_AddedTokens(), ["<td>", "</td>"]) == [128821, 128822]
    assert single_token_ids(ByteTokenizer(), ["<td>", "</td>"]) == []  # no such token
