"""``build_model(cfg)``: compose registered parts into an :class:`OCRModel`, checking sizes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from encoders.base import VisionEncoder
from zoo.inputs.preprocessing import ViewMode, get_view_mode
from zoo.inputs.text_tokenizer import TextTokenizer, load_text_tokenizer
from zoo.model.config import BUILD_KEYS, split_name, to_plain
from zoo.model.ocr_model import OCRModel
from zoo.registry import (
    check_plugins_loaded,
    create_decoder,
    create_encoder,
    create_projector,
)


class ComponentMismatchError(ValueError):
    """Two composed parts disagree on a size."""


def build_model(cfg: Mapping[str, Any], tokenizer: TextTokenizer | None = None) -> OCRModel:
    """Build encoder, projector and decoder from ``cfg`` and compose them.

    ``cfg`` holds the nodes ``encoder``, ``projector``, ``decoder`` (each a registry ``name`` plus
    keyword arguments), ``model`` (``image_mode``: a view-mode name or mapping; optionally
    ``image_token_id``, which a configured tokenizer must agree with) and optionally
    ``text_tokenizer`` (see :func:`zoo.inputs.text_tokenizer.load_text_tokenizer`) and ``plugins``
    (modules whose components it uses: they must be imported already, since a config may come
    from an untrusted checkpoint; see :func:`zoo.registry.check_plugins_loaded`).
    """
    check_plugins_loaded(to_plain(cfg.get("plugins")) or [])
    tokenizer_given = tokenizer is not None or bool(cfg.get("text_tokenizer"))
    if tokenizer is None:
        tokenizer = load_text_tokenizer(to_plain(cfg.get("text_tokenizer")))

    encoder_name, encoder_kwargs = split_name(cfg["encoder"], "encoder")
    decoder_name, decoder_kwargs = split_name(cfg["decoder"], "decoder")
    projector_name, projector_kwargs = split_name(cfg["projector"], "projector")
    encoder = create_encoder(encoder_name, **encoder_kwargs)
    decoder = create_decoder(decoder_name, **decoder_kwargs)

    expected_in = projector_kwargs.setdefault("in_dim", encoder.out_dim)
    if expected_in != encoder.out_dim:
        raise ComponentMismatchError(
            f"encoder {encoder_name!r} outputs {encoder.out_dim} channels but projector "
            f"{projector_name!r} expects in_dim={expected_in}"
        )
    expected_out = projector_kwargs.setdefault("out_dim", decoder.hidden_size)
    if expected_out != decoder.hidden_size:
        raise ComponentMismatchError(
            f"projector {projector_name!r} outputs out_dim={expected_out} but decoder "
            f"{decoder_name!r} has hidden_size={decoder.hidden_size}"
        )
    if tokenizer.vocab_size > decoder.vocab_size:
        raise ComponentMismatchError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but decoder {decoder_name!r} has "
            f"vocab_size={decoder.vocab_size}"
        )
    projector = create_projector(projector_name, **projector_kwargs)
    model_cfg = to_plain(cfg.get("model") or {})
    image_mode = get_view_mode(model_cfg.get("image_mode"))
    check_view_tokens(encoder, encoder_name, image_mode)
    image_token_id = model_cfg.get("image_token_id", tokenizer.image_id)
    if tokenizer_given and image_token_id != tokenizer.image_id:
        raise ComponentMismatchError(
            f"model.image_token_id={image_token_id} but the tokenizer's <image> token is "
            f"{tokenizer.image_id}"
        )
    model = OCRModel(
        encoder, projector, decoder, image_token_id=image_token_id, image_mode=image_mode
    )
    # What built it, so that save_pretrained can write a folder from_pretrained rebuilds.
    model.build_config = {key: to_plain(cfg.get(key)) for key in BUILD_KEYS}
    return model


def check_view_tokens(encoder: VisionEncoder, encoder_name: str, mode: ViewMode) -> None:
    """The encoder must give each view as many tokens as the view mode makes placeholders."""
    for view_size in (mode.global_size, mode.local_size):
        if view_size is None:
            continue
        given, expected = encoder.num_tokens(view_size), mode.view_tokens(view_size)
        if given != expected:
            raise ComponentMismatchError(
                f"encoder {encoder_name!r} gives {given} tokens for a {view_size}-px view but "
                f"view mode {mode.name!r} lays out {expected} (token_ratio={mode.token_ratio}); "
                "set model.image_mode.token_ratio to match the encoder's queries"
            )
