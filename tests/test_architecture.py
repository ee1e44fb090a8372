"""The shape of the code: no import cycles between the zoo's modules, and a model loads without
the training stack (Lightning, Hydra, OmegaConf), transformers or timm."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_train
from zoo import build_model
from zoo.run_setup import model_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "encoders", "decoders", "masks", "lightning_modules")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test)


def imported_modules(path: Path) -> set[str]:
    """The zoo modules a file imports anywhere (deferred imports in functions included; imports
    only for type checkers left out)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.add(submodule if submodule in MODULES else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return cycles


def test_cycle_finder_finds_a_deferred_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    assert import_cycles(graph) == []


def test_the_graph_sees_deferred_imports():
    # zoo.model.inference reads a Lightning .ckpt through the Lightning module, inside a function
    assert "lightning_modules.ocr_module" in imported_modules(MODULES["zoo.model.inference"])


@pytest.mark.parametrize("layout", ["zoo", "official"])
def test_loading_a_model_imports_no_training_stack(tmp_path, layout):
    encoder = "causal_flow" if layout == "official" else "deepencoder"
    model = build_model(model_config(compose_train([f"encoder={encoder}"])))
    folder = model.save_pretrained(tmp_path / "model", layout=layout)
    script = (
        "import sys, zoo\n"
        f"zoo.from_pretrained({str(folder)!r}); zoo.load_processor({str(folder)!r})\n"
        "heavy = ('lightning', 'lightning_fabric', 'pytorch_lightning', 'hydra', 'omegaconf',"
        " 'transformers', 'torchmetrics', 'timm', 'torchvision')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
