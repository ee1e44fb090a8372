"""The official prompts of both releases, and prompt presets by name."""

from __future__ import annotations

from zoo.inputs.text_tokenizer import IMAGE_TOKEN

MARKDOWN_PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
FREE_OCR_PROMPT = "<image>\nFree OCR."
PROMPT_PRESETS = {"markdown": MARKDOWN_PROMPT, "free": FREE_OCR_PROMPT}


def resolve_prompt(prompt: str) -> str:
    """A preset name (``markdown``, ``free``) or a prompt text; a text without the ``<image>``
    marker gets it in front, as the official prompts have it."""
    prompt = PROMPT_PRESETS.get(prompt, prompt)
    return prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN}\n{prompt}"
