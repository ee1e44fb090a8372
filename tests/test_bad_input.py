"""Bad input and faults (issue 16, docs/bad_input.md): nothing runs from a checkpoint, no output is
lost or mixed, pages are read as the official loaders read them, every error names its input."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from lightning_modules.checkpoint_io import AtomicCheckpointIO
from tests.conftest import REPO, compose_train
from tests.test_checkpoint import tiny_model
from tests.test_evaluate_cli import compose_eval
from tests.test_ocr import save_tiny_checkpoint
from tests.test_omnidocbench import DEMO, GT_FILE
from zoo.data.page_datasets import ImageFileDataset, image_size, open_page
from zoo.eval.omnidocbench import load_ground_truth, match_page, page_records
from zoo.eval.prediction_run import RECORD_FILE, MixedRunError, claim_predictions
from zoo.evaluate import evaluate
from zoo.inputs.preprocessing import preprocess
from zoo.io.atomic import write_text_atomic
from zoo.io.folder import CONFIG_FILE, WEIGHTS_FILE, CheckpointFormatError
from zoo.io.lightning_checkpoint import read_checkpoint_file, read_ocr_checkpoint
from zoo.io.tensors import InitError
from zoo.model.build import build_model
from zoo.model.inference import Transcription, load_inference_model
from zoo.ocr import collect_pages, main
from zoo.registry import PluginNotAllowedError
from zoo.run_setup import model_config
from zoo.train import train

PLUGIN = "zoo_issue16_marker_plugin"
TINY_V2_MODE = {"name": "v2", "global_size": 256, "local_size": 192}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture
def marker_plugin(tmp_path: Path, monkeypatch) -> Path:
    """A harmless module that, when imported, writes a marker file; returns the marker path."""
    marker = tmp_path / "plugin_was_imported"
    (tmp_path / f"{PLUGIN}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(PLUGIN, None)


def page_png(path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    Image.new("RGB", size, "white").save(path)
    return path


# --- security: a checkpoint's plugins are imported only when the caller names them ------------


def test_folder_plugins_are_never_imported_unless_named(tmp_path: Path, marker_plugin: Path):
    model, _ = tiny_model()
    folder = model.save_pretrained(tmp_path / "model")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["build"]["plugins"] = [PLUGIN]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(PluginNotAllowedError) as refused:
        zoo.from_pretrained(folder)
    message = str(refused.value)
    assert PLUGIN in message and CONFIG_FILE in message and f"plugins=['{PLUGIN}']" in message
    assert not marker_plugin.exists() and PLUGIN not in sys.modules
    zoo.from_pretrained(folder, plugins=[PLUGIN])
    assert marker_plugin.read_text() == "imported"


def test_lightning_checkpoint_plugins_are_never_imported_unless_named(
    tmp_path: Path, tiny_ckpt: Path, marker_plugin: Path
):
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["model_cfg"]["plugins"] = [PLUGIN]
    ckpt = tmp_path / "with_plugin.ckpt"
    torch.save(checkpoint, ckpt)
    image = page_png(tmp_path / "page.png")
    out = tmp_path / "out"
    with pytest.raises(PluginNotAllowedError, match="hyper_parameters.model_cfg.plugins"):
        main([str(image), "--checkpoint", str(ckpt), "--out", str(out), "--max-new-tokens", "1"])
    with pytest.raises(PluginNotAllowedError, match=f"--plugin {PLUGIN}"):
        load_inference_model(ckpt)
    assert not marker_plugin.exists() and not out.exists()
    argv = [str(image), "--checkpoint", str(ckpt), "--out", str(out), "--max-new-tokens", "1"]
    assert main([*argv, "--plugin", PLUGIN]) == 0
    assert marker_plugin.exists() and (out / "page.md").is_file()


def test_evaluate_imports_only_the_plugins_on_its_command_line(
    tmp_path: Path, tiny_ckpt: Path, marker_plugin: Path, shared_dir: Path
):
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["model_cfg"]["plugins"] = [PLUGIN]
    ckpt = tmp_path / "with_plugin.ckpt"
    torch.save(checkpoint, ckpt)
    run = [
        f"ckpt_path={ckpt}", "data=omnidocbench", f"data.root={shared_dir / DEMO}",
        "data.num_workers=0", "generation.max_new_tokens=1", "page_filter={data_source: PPT2PDF}",
    ]  # fmt: skip
    with pytest.raises(PluginNotAllowedError, match=PLUGIN):
        evaluate(compose_eval(tmp_path / "refused", run))
    assert not marker_plugin.exists()
    evaluate(compose_eval(tmp_path / "allowed", [*run, f"plugins=[{PLUGIN}]"]))
    assert marker_plugin.exists()


# --- zoo.ocr: broken PDF pages, clashing names, atomic writes ----------------------------------


def pdf_with_broken_second_page(path: Path) -> Path:
    """A 3-page PDF whose second page object is not a page (same length, so the offsets hold)."""
    pages = [Image.new("RGB", (100, 150), colour) for colour in ("white", "gray", "black")]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    data = path.read_bytes()
    at = data.index(b"/Type /Page\n", data.index(b"3 0 obj"))
    path.write_bytes(data[:at] + b"/Type /Pagx\n" + data[at + 12 :])
    return path


def test_ocr_skips_a_broken_pdf_page_and_goes_on(tmp_path: Path, tiny_ckpt: Path, caplog):
    pdf = pdf_with_broken_second_page(tmp_path / "doc.pdf")
    later = page_png(tmp_path / "later.png")
    out = tmp_path / "out"
    argv = [str(pdf), str(later), "--checkpoint", str(tiny_ckpt), "--out", str(out)]
    assert main([*argv, "--max-new-tokens", "1", "--batch-size", "2"]) == 1
    assert sorted(p.name for p in out.glob("*.md")) == ["doc_page1.md", "doc_page3.md", "later.md"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "doc.pdf page 2" in errors[0] and "cannot be rendered" in errors[0]


def test_ocr_output_names_are_unique_and_stable(tmp_path: Path):
    for relative in ("x/page.png", "y/page.png", "scan.png", "scan.jpg", "folder/a/note.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        page_png(tmp_path / relative)
    inputs = [
        tmp_path / "x/page.png", tmp_path / "y/page.png", tmp_path / "scan.png",
        tmp_path / "scan.jpg", tmp_path / "folder", tmp_path / "folder/a/note.png",
    ]  # fmt: skip
    names = {page.source: page.name for page in collect_pages(inputs[:5], [])}
    assert sorted(names.values()) == ["a/note", "scan.jpg", "scan.png", "x/page.png", "y/page.png"]
    assert {p.source: p.name for p in collect_pages(inputs[4::-1], [])} == names
    assert len(collect_pages(inputs, [])) == 5  # the note given twice is read once


def test_ocr_never_leaves_a_partial_markdown_and_names_a_failed_write(
    tmp_path: Path, tiny_ckpt: Path, monkeypatch, caplog
):
    real_write_text = Path.write_text

    def disk_full(self: Path, text: str, *args, **kwargs) -> int:
        real_write_text(self, text[:3], *args, **kwargs)  # part of it reached the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", disk_full)
    pages = [page_png(tmp_path / f"p{i}.png") for i in range(2)]
    out = tmp_path / "out"
    argv = [*map(str, pages), "--checkpoint", str(tiny_ckpt), "--out", str(out)]
    assert main([*argv, "--max-new-tokens", "1"]) == 1
    assert list(out.iterdir()) == []  # neither a partial .md nor a temporary file
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert f"could not write {out / 'p0.md'}" in errors and "No space left" in errors
    assert "stopped, 0 pages were written" in errors


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch):
    target = write_text_atomic(tmp_path / "metrics.json", "old")
    monkeypatch.setattr(
        Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EDQUOT, "quota"))
    )
    with pytest.raises(OSError, match=f"could not write {target}: quota"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_lightning_checkpoints_are_written_beside_their_destination(tmp_path: Path, monkeypatch):
    trainer = compose_train([]).trainer
    assert trainer.plugins[0]["_target_"] == "lightning_modules.checkpoint_io.AtomicCheckpointIO"
    io, last = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "step": 1}, last)
    real_save = torch.save

    def disk_full(obj, handle, *args, **kwargs) -> None:
        assert Path(handle.name).parent == last.parent  # never the system temporary folder
        handle.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=f"could not write {last}: No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "step": 2}, last)
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert read_checkpoint_file(last)["step"] == 1  # the previous checkpoint is intact


# --- zoo.evaluate: a resume into another run's predictions ------------------------------------


def test_a_resume_with_another_model_or_settings_stops(tmp_path: Path):
    folder = tmp_path / "predictions"
    run_a = {"model": {"path": "/runs/a.ckpt"}, "generation": {"max_new_tokens": 64}}
    claim_predictions(folder, run_a)
    (folder / "page.md").write_text("# page of model A")
    claim_predictions(folder, run_a)  # the same run resumes
    run_b = {"model": {"path": "/runs/b.ckpt"}, "generation": {"max_new_tokens": 64}}
    with pytest.raises(MixedRunError, match="/runs/a.ckpt.*/runs/b.ckpt.*overwrite=true"):
        claim_predictions(folder, run_b)
    longer = {**run_a, "generation": {"max_new_tokens": 128}}
    with pytest.raises(MixedRunError, match="generation: recorded .*64.*now .*128"):
        claim_predictions(folder, longer)
    claim_predictions(folder, run_b, overwrite=True)  # starts afresh
    assert not (folder / "page.md").exists()
    assert json.loads((folder / RECORD_FILE).read_text())["model"]["path"] == "/runs/b.ckpt"
    (tmp_path / "unrecorded").mkdir()
    (tmp_path / "unrecorded" / "page.md").write_text("# from somewhere")
    with pytest.raises(MixedRunError, match=f"1 pages but no {RECORD_FILE}"):
        claim_predictions(tmp_path / "unrecorded", run_a)


def test_evaluate_refuses_to_mix_two_models_in_one_folder(
    tmp_path: Path, tiny_ckpt: Path, shared_dir: Path
):
    other = tmp_path / "other.ckpt"
    other.write_bytes(tiny_ckpt.read_bytes())
    run = [
        "data=omnidocbench", f"data.root={shared_dir / DEMO}", "data.num_workers=0",
        "generation.max_new_tokens=1", "page_filter={data_source: PPT2PDF}",
    ]  # fmt: skip
    evaluate(compose_eval(tmp_path / "run", [f"ckpt_path={tiny_ckpt}", *run]))
    with pytest.raises(MixedRunError, match=f"{tiny_ckpt}.*{other}"):
        evaluate(compose_eval(tmp_path / "run", [f"ckpt_path={other}", *run]))
    metrics = evaluate(
        compose_eval(tmp_path / "run", [f"ckpt_path={other}", *run, "overwrite=true"])
    )
    assert metrics["n_pages"] == 2 and metrics["n_missing"] == 0


def test_sigterm_stops_a_model_run_after_the_batch_in_progress(
    tmp_path: Path, tiny_ckpt: Path, shared_dir: Path, monkeypatch
):
    calls = []

    def transcribe_then_terminate(model, processor, images, settings):
        calls.append(len(images))
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the first batch is in progress
        return [Transcription("# page", "# page", False) for _ in images]

    monkeypatch.setattr("lightning_modules.predict_module.transcribe", transcribe_then_terminate)
    run = [
        f"ckpt_path={tiny_ckpt}", "data=omnidocbench", f"data.root={shared_dir / DEMO}",
        "data.num_workers=0", "data.batch_size=2", "page_filter={language: english}",
    ]  # fmt: skip
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        evaluate(compose_eval(tmp_path / "run", run))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert calls == [2]  # stopped after the first batch
    assert len(list((tmp_path / "run" / "predictions").glob("*.md"))) == 2  # and kept it
    assert signal.getsignal(signal.SIGTERM) == handler


WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from torch.utils.data import DataLoader, Dataset
    from zoo.data.workers import ExitWithParent

    class Slow(Dataset):
        def __len__(self):
            return 4
        def __getitem__(self, index):
            print(os.getpid(), flush=True)
            time.sleep(60)
            return index

    loader = DataLoader(Slow(), num_workers=1, worker_init_fn=ExitWithParent())
    next(iter(loader))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited and waits to be reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_data_loading_workers_die_with_their_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


# --- pages read as the official loaders read them ----------------------------------------------


def test_exif_orientation_is_applied_everywhere(tmp_path: Path):
    stored = Image.new("RGB", (400, 200), "white")
    exif = stored.getexif()
    exif[0x0112] = 6  # rotated: shown as 200 x 400
    stored.save(tmp_path / "turned.jpg", exif=exif)
    path = tmp_path / "turned.jpg"
    assert open_page(path).size == (200, 400) and image_size(path) == (200, 400)
    assert ImageFileDataset([(path, "text")])[0].image.size == (200, 400)  # the datamodules
    assert collect_pages([path], [])[0].load().size == (200, 400)  # zoo.ocr
    with Image.open(path) as image:  # preprocess given the opened file
        assert preprocess([image], TINY_V2_MODE).crop_grids == [(1, 2)]
    assert preprocess([Image.new("RGB", (400, 200))], TINY_V2_MODE).crop_grids == [(2, 1)]


def test_16_bit_grey_is_scaled_and_transparency_is_white(tmp_path: Path):
    grey = np.tile(np.array([0, 32896, 65535], dtype=np.uint16), (4, 1))
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    pixels = np.asarray(open_page(tmp_path / "grey16.png"))
    assert pixels[0, :, 0].tolist() == [0, 128, 255] and pixels.shape == (4, 3, 3)

    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 255))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    rgba.save(tmp_path / "transparent.png")
    page = open_page(tmp_path / "transparent.png")
    assert page.getpixel((0, 0)) == (255, 255, 255) and page.getpixel((1, 1)) == (0, 0, 0)
    assert page.getpixel((2, 2)) == (127, 127, 127)
    assert preprocess([rgba], "tiny").global_views[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]


# --- errors that name the file or config key and what was expected ----------------------------


@pytest.fixture
def saved_folder(tmp_path: Path) -> Path:
    model, _ = tiny_model()
    return model.save_pretrained(tmp_path / "model")


def test_truncated_safetensors_names_the_file(saved_folder: Path):
    weights = saved_folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match=f"{weights}: not a complete safetensors file"):
        zoo.from_pretrained(saved_folder)


def test_a_config_that_is_not_json_or_has_no_build_names_the_file(saved_folder: Path):
    config = saved_folder / CONFIG_FILE
    text = config.read_text()
    config.write_text(text[:-20])
    with pytest.raises(CheckpointFormatError, match=f"{config}: not valid JSON"):
        zoo.from_pretrained(saved_folder)
    config.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "build"}))
    with pytest.raises(CheckpointFormatError, match=f"{config}: expected a 'build' object"):
        zoo.from_pretrained(saved_folder)


def test_an_integer_tensor_for_a_float_parameter_is_named(saved_folder: Path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(saved_folder / WEIGHTS_FILE)
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)
    tensors[name] = tensors[name].to(torch.int64)
    save_file(tensors, saved_folder / WEIGHTS_FILE)
    with pytest.raises(InitError, match=rf"wrong kind of number: \['{name} torch.int64 "):
        zoo.from_pretrained(saved_folder)


def test_a_negative_size_names_the_config_key():
    cfg = model_config(compose_train(["decoder.hidden_size=-1"]))
    with pytest.raises(ValueError, match=r"decoder\.hidden_size=-1 is negative"):
        build_model(cfg)


class OtherModule(L.LightningModule):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)


def test_a_checkpoint_of_another_lightning_module_is_named(tmp_path: Path):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(OtherModule())
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointFormatError, match="not a checkpoint of zoo.train's OCRLight"):
        load_inference_model(tmp_path / "other.ckpt")


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 cut short"])
def test_resuming_from_a_damaged_checkpoint_names_it(tmp_path: Path, content: bytes):
    last = tmp_path / "last.ckpt"
    last.write_bytes(content)
    cfg = compose_train([f"ckpt_path={last}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(CheckpointFormatError, match=f"{last}: .*expected a Lightning .ckpt") as bad:
        train(cfg)
    assert "weights_only=False" not in str(bad.value)


def test_a_checkpoint_with_objects_is_refused_without_advice_to_unpickle(tmp_path: Path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "callback": OtherModule}, path)
    with pytest.raises(CheckpointFormatError, match="refused by the safe loader") as refused:
        read_ocr_checkpoint(path)
    assert "weights_only=False" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


# --- scoring a runaway prediction --------------------------------------------------------------


def test_a_huge_single_line_prediction_is_bounded_and_flagged(tmp_path: Path, shared_dir: Path):
    demo = shared_dir / DEMO
    page = load_ground_truth(demo / GT_FILE)[0]
    runaway = ("the quick brown fox jumps over " * 170_000)[:5_000_000]
    record = page_records([match_page(page, runaway)])[0]
    assert record["match_bounded"] and record["text_edit"] > 0.99

    predictions = tmp_path / "predictions"
    predictions.mkdir()
    (predictions / f"{Path(page.image_name).stem}.md").write_text(runaway)
    truth = tmp_path / "one_page.json"
    truth.write_text(json.dumps(json.loads((demo / GT_FILE).read_text())[:1]))
    evaluate(
        compose_eval(tmp_path / "run", [f"predictions={predictions}", f"ground_truth={truth}"])
    )
    rows = (tmp_path / "run" / "pages.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert row[header.index("match_bounded")] == "True"


def test_real_predictions_never_reach_the_bound(shared_dir: Path):
    demo = shared_dir / DEMO
    for page in load_ground_truth(demo / GT_FILE):
        markdown = (demo / "predictions_end2end" / f"{Path(page.image_name).stem}.md").read_text()
        assert not match_page(page, markdown).match_bounded
