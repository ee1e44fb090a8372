"""Running a trained OCR model over pages: loading it from any checkpoint, and greedy
transcription of a batch of pages under a generation preset (``configs/generation``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import yaml
from PIL import Image

from zoo.inputs.postprocessing import postprocess
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import resolve_prompt
from zoo.inputs.text_tokenizer import TextTokenizer
from zoo.io.lightning_checkpoint import read_ocr_checkpoint
from zoo.io.load import from_pretrained, load_processor
from zoo.layers.linear import lay_out_weights
from zoo.model.ocr_model import OCRModel
from zoo.model.quantize import QUANTIZED_ACTIVATION_DTYPE, check_quantize, quantize_model
from zoo.registry import check_plugins_loaded, import_plugins


def load_inference_model(
    path: Path | str, plugins: Sequence[str] = (), quantize: str | None = None
) -> tuple[OCRModel, OCRProcessor]:
    """The model and processor of a Lightning ``.ckpt`` written by ``zoo.train``, or of a
    checkpoint directory (released, transformers- or zoo-saved) read by :mod:`zoo.io.load`.

    ``plugins``: modules of user components the caller allows; a plugin the checkpoint lists
    but the caller did not name is never imported (see :func:`zoo.io.load.from_pretrained`).
    ``quantize``: ``"int8"`` for weight-only int8 in bfloat16 (:mod:`zoo.model.quantize`).
    """
    path = Path(path)
    check_quantize(quantize)
    if path.is_dir():
        model = from_pretrained(path, plugins=plugins, quantize=quantize)
        return model, load_processor(path)
    if path.is_file():
        from lightning_modules.ocr_module import OCRLightningModule

        model_cfg = read_ocr_checkpoint(path)["hyper_parameters"]["model_cfg"]
        import_plugins(plugins)
        check_plugins_loaded(
            model_cfg.get("plugins") or [], f"{path} (hyper_parameters.model_cfg.plugins)"
        )
        module = OCRLightningModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True
        )
        model = module.model.eval()
        if quantize:
            model.to(QUANTIZED_ACTIVATION_DTYPE)
            lay_out_weights(model)
            quantize_model(model, quantize)
        return model, module.processor
    raise FileNotFoundError(
        f"checkpoint {path}: no such file or directory; expected a Lightning .ckpt of zoo.train "
        "or a checkpoint directory"
    )


GENERATION_PRESETS = Path(str(resources.files("configs") / "generation"))


@dataclass(frozen=True)
class GenerationSettings:
    """How pages are transcribed: one preset of ``configs/generation`` (see its files).

    ``no_repeat_ngram_size`` bans repeated n-grams; with ``ngram_window`` only the last that
    many *generated* tokens are searched (the official scripts' guard), without it the whole
    history, prompt included (transformers' ``no_repeat_ngram_size``). ``ngram_exempt``: tokens
    never banned, resolved to ids by the tokenizer. ``view_mode``: None keeps the checkpoint's.
    ``postprocess``: a preset of :mod:`zoo.inputs.postprocessing`. ``quantize``: ``"int8"``
    loads the model with weight-only int8 decoder layers, in bfloat16 (None: as stored).
    """

    name: str = "default"
    prompt: str = "markdown"
    max_new_tokens: int = 8192
    no_repeat_ngram_size: int = 20
    ngram_window: int | None = None
    ngram_exempt: tuple[str, ...] = ()
    view_mode: str | Mapping | None = None
    postprocess: str = "grounding"
    quantize: str | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> GenerationSettings:
        """Settings from a ``generation`` config node (unknown keys are an error)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(
                f"generation: unknown settings {sorted(unknown)}; valid: {sorted(known)}"
            )
        values = dict(config)
        values["ngram_exempt"] = tuple(values.get("ngram_exempt") or ())
        check_quantize(values.get("quantize"))
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides: object) -> GenerationSettings:
        """The ``configs/generation/<name>.yaml`` preset, with ``overrides`` (None: not given)."""
        path = GENERATION_PRESETS / f"{name}.yaml"
        if not path.is_file():
            valid = sorted(file.stem for file in GENERATION_PRESETS.glob("*.yaml"))
            raise ValueError(f"unknown generation preset {name!r}; valid presets: {valid}")
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_config(config)

    def to_dict(self) -> dict:
        """The settings as plain data (recorded with every score)."""
        return {**dataclasses.asdict(self), "prompt": resolve_prompt(self.prompt)}


@dataclass(frozen=True)
class Transcription:
    """One page's answer: the raw text, the post-processed markdown, whether it hit the limit."""

    raw: str
    markdown: str
    hit_token_limit: bool


def single_token_ids(tokenizer: TextTokenizer, tokens: Sequence[str]) -> list[int]:
    """The ids of the ``tokens`` the tokenizer writes as one token; others are left out (a
    byte-level tokenizer has no ``<td>`` token to exempt)."""
    encoded = [tokenizer.encode(token) for token in tokens]
    return [ids[0] for ids in encoded if len(ids) == 1]


@torch.no_grad()
def transcribe(
    model: OCRModel,
    processor: OCRProcessor,
    images: Sequence[Image.Image],
    settings: GenerationSettings,
) -> list[Transcription]:
    """Greedy answers of the model for a batch of pages (prompts left-padded together)."""
    if not images:
        return []
    if settings.view_mode is not None:
        processor = OCRProcessor(
            processor.tokenizer, settings.view_mode, processor.max_answer_tokens
        )
    parameter = next(model.parameters())
    prompt = resolve_prompt(settings.prompt)
    batch = processor(list(images), [prompt] * len(images), padding_side="left")
    tokenizer = processor.tokenizer
    input_ids = batch["input_ids"].to(parameter.device)
    generated = model.generate(
        input_ids,
        images=batch["images"].to(parameter.device, dtype=parameter.dtype),
        attention_mask=batch["attention_mask"].to(parameter.device),
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        ngram_window=settings.ngram_window,
        ngram_exempt_ids=single_token_ids(tokenizer, settings.ngram_exempt),
        prompt_ids=input_ids if settings.ngram_window is None else None,
    )
    hit_limit = (generated != tokenizer.eos_id).all(dim=1) & (
        generated.shape[1] == settings.max_new_tokens
    )
    answers = [processor.decode(row) for row in generated]
    return [
        Transcription(answer, postprocess(answer, settings.postprocess), bool(hit))
        for answer, hit in zip(answers, hit_limit.tolist(), strict=True)
    ]
