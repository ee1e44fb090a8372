"""Registries: register, create, list, unknown names, plugins."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint

import pytest

from zoo import registry
from zoo.list import format_components
from zoo.registry import (
    ENCODERS,
    PluginNotAllowedError,
    Registry,
    UnknownComponentError,
    import_plugins,
)


def test_register_and_create_with_kwargs():
    reg = Registry("widget")

    @reg.register("square")
    class Square:
        """A square widget."""

        def __init__(self, side: int = 1) -> None:
            self.side = side

    assert reg.create("square", side=3).side == 3
    assert reg.names() == ["square"]
    assert reg.names("sq*") == ["square"] and reg.names("x*") == []
    assert reg.summary("square") == "A square widget."


def test_unknown_name_lists_valid_names():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    reg.register("beta")(lambda: 2)
    with pytest.raises(UnknownComponentError, match=r"unknown widget 'gamma'.*alpha, beta"):
        reg.create("gamma")


def test_unknown_builtin_encoder_lists_the_real_ones():
    with pytest.raises(UnknownComponentError) as err:
        registry.create_encoder("no_such_encoder")
    for name in ("causal_flow", "deepencoder", "sam_vitb"):
        assert name in str(err.value)


def test_bad_keyword_names_the_component():
    reg = Registry("widget")
    reg.register("square")(lambda side=1: side)
    with pytest.raises(TypeError, match="widget 'square'"):
        reg.create("square", colour="red")


def test_duplicate_name_is_refused():
    reg = Registry("widget")
    reg.register("square")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("square")(lambda: 2)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A user package on sys.path that registers an encoder, removed again afterwards."""
    (tmp_path / "my_zoo_plugin.py").write_text(
        textwrap.dedent(
            '''
            from zoo import register_encoder

            @register_encoder("plugin_encoder")
            def build(width: int = 4):
                """An encoder registered from outside the zoo."""
                return ("plugin", width)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_zoo_plugin"
    ENCODERS._constructors.pop("plugin_encoder", None)
    import sys

    sys.modules.pop("my_zoo_plugin", None)


def test_plugin_module_from_config(plugin_module):
    import_plugins([plugin_module])
    assert registry.create_encoder("plugin_encoder", width=7) == ("plugin", 7)
    assert "plugin_encoder" in format_components("plugin*")


def test_plugin_entry_point(plugin_module, monkeypatch):
    point = EntryPoint("mine", plugin_module, registry.PLUGIN_ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "plugin_encoder" in ENCODERS.names()


def test_missing_plugin_module_is_named():
    with pytest.raises(ImportError, match="no_such_plugin_module"):
        import_plugins(["no_such_plugin_module"])


def test_zoo_list_shows_the_core_components(capsys):
    from zoo.list import main

    main([])
    out = capsys.readouterr().out
    for name in ("causal_flow", "deepencoder", "deepseek_moe", "linear", "synthetic_pages"):
        assert name in out


def test_user_encoder_with_its_own_config_folder_builds_and_runs(tmp_path, monkeypatch):
    """A user package + config folder, no zoo edit: the config names the plugin module."""
    package = tmp_path / "user_encoders.py"
    package.write_text(
        textwrap.dedent(
            '''
            import torch
            from torch import nn

            from encoders.base import VisionEncoder
            from zoo.registry import register_encoder


            @register_encoder("user_patches")
            class UserPatches(VisionEncoder):
                """64-px patches projected to out_dim channels."""

                def __init__(self, out_dim: int = 8) -> None:
                    super().__init__()
                    self.out_dim = out_dim
                    self.proj = nn.Conv2d(3, out_dim, kernel_size=64, stride=64)

                def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                    return self.proj(pixel_values).flatten(2).transpose(1, 2)

                def num_tokens(self, view_size: int) -> int:
                    return (view_size // 64) ** 2
            '''
        )
    )
    (tmp_path / "configs" / "encoder").mkdir(parents=True)
    (tmp_path / "configs" / "encoder" / "user_patches.yaml").write_text(
        textwrap.dedent(
            """\
            # @package _global_
            encoder: {name: user_patches, out_dim: 8}
            model:
              image_mode: {name: v2, global_size: 256, local_size: 192}
            plugins: [user_encoders]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from tests.conftest import compose_train
        from tests.test_configs import tiny_forward

        cfg = compose_train(
            [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "encoder=user_patches"]
        )
        assert list(cfg.plugins) == ["user_encoders"]
        with pytest.raises(PluginNotAllowedError, match=r"\['user_encoders'\]"):
            tiny_forward(cfg)  # build_model never imports a config's plugins by itself
        import_plugins(cfg.plugins)  # as zoo.train does with its own run config
        tiny_forward(cfg)
    finally:
        ENCODERS._constructors.pop("user_patches", None)
        import sys

        sys.modules.pop("user_encoders", None)
