"""The README stays true: its Python snippets run, its commands that take seconds run, and every
other command it shows names the test that runs the same entry point.

Snippets and commands run in a scratch folder beside a link to ``../shared`` (the README's paths
are relative to the checkout), with a tiny random model in the released layout standing in for
the ``DeepSeek-OCR-2`` folder, as the README says; ``/tmp/`` paths are moved into the scratch
folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_train
from zoo import build_model
from zoo.run_setup import model_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHARED = ROOT.parent / "shared"

# Commands run here, in README order (later ones read what earlier ones wrote).
RUN_HERE = (
    "python -m zoo.list",
    "python -m zoo.ocr --checkpoint DeepSeek-OCR-2",
    "python -m zoo.evaluate predictions=",
    "python -m zoo.evaluate checkpoint=DeepSeek-OCR-2",
    "python -m zoo.compare",
)
# Commands that take minutes or need what this machine lacks, and where their entry point is tested.
RUN_ELSEWHERE = {
    "make ": "installs a virtual environment; CI runs `make test` itself",
    "python -m zoo.train": "minutes of training; tests/test_training.py, test_stages.py and "
    "test_component_contract.py run zoo.train with a few steps",
    "python -m zoo.evaluate ckpt_path=": "needs a training run; tests/test_evaluate_cli.py",
    "python -m zoo.ocr --checkpoint logs/": "needs a training run and a PDF; tests/test_ocr.py",
    "python -m zoo.bench": "minutes (fullsize: the 3.39B model); tests/test_bench.py runs --quick "
    "suites, fullsize among them on the reduced released layout",
    "python -m zoo.study": "hours for the grid; tests/test_study.py runs two systems and an "
    "intervention for one seed and a few steps, then again (all skipped)",
    "pytest ": "the suite itself",
    "python scripts/lora_demo_": "inputs of the LoRA walkthrough (minutes of training); "
    "tests/test_lora.py trains, saves, loads and merges adapters",
    "du -b ": "measures the LoRA walkthrough's files",
    "python -m zoo.merge": "needs the LoRA walkthrough's adapter; tests/test_lora.py runs "
    "zoo.merge in each layout",
    "python scripts/screenshot_report.py": "needs Chromium, which CI lacks; run by hand for "
    "docs/report_*.png (tests/test_report.py checks the HTML it shoots)",
}


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, continuation lines joined, comments and
    the ``.venv/bin/`` prefix of the quick start dropped."""
    commands = []
    for block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line).removeprefix(".venv/bin/"))
    return commands


def test_every_readme_command_is_run_here_or_accounted_for():
    commands = readme_commands()
    assert commands, "no bash block found in the README"
    unaccounted = [
        command
        for command in commands
        if not command.startswith(RUN_HERE) and not command.startswith(tuple(RUN_ELSEWHERE))
    ]
    assert unaccounted == [], "add these README commands to RUN_HERE or RUN_ELSEWHERE"
    for prefix in RUN_HERE:
        assert any(c.startswith(prefix) for c in commands), f"the README no longer shows {prefix}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A working folder beside ``shared`` holding a tiny released-layout ``DeepSeek-OCR-2``."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the shared demo pages) is not beside the checkout")
    root = tmp_path_factory.mktemp("readme")
    (root / "shared").symlink_to(SHARED, target_is_directory=True)
    work = root / "work"
    work.mkdir()
    model = build_model(model_config(compose_train(["encoder=causal_flow"])))
    model.save_pretrained(work / "DeepSeek-OCR-2", layout="official")
    return work


def run(arguments: list[str], work: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        arguments, cwd=work, capture_output=True, text=True, timeout=600, env=None
    )
    assert result.returncode == 0, (
        f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def snippets_output(scratch: Path) -> str:
    """What the README's Python snippets print, run in README order in one process (a later
    snippet uses an earlier one's variables; the README commands read what they write)."""
    script = "\n".join(fenced_blocks("python")).replace("/tmp/", f"{scratch}/tmp_")
    (scratch / "readme_snippets.py").write_text(script)
    return run(
        [sys.executable, "readme_snippets.py"], scratch, "the README's Python snippets"
    ).stdout


def test_readme_python_snippets_run(snippets_output):
    assert len(fenced_blocks("python")) >= 3
    assert "image tokens" in snippets_output


@pytest.mark.slow
def test_readme_commands_run(scratch, snippets_output):
    for command in readme_commands():
        if not command.startswith(RUN_HERE):
            continue
        arguments = shlex.split(command.replace("/tmp/", f"{scratch}/tmp_"))
        run([sys.executable, *arguments[1:]], scratch, f"README command `{command}`")
