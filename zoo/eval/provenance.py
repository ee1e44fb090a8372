"""What a score was measured on and with, recorded in ``metrics.json`` beside the figures.

A figure is comparable with another only when both scored the same ground truth with the same
matching, and generated with the same prompt, view mode, decoding and post-processing from the
same weights; ``zoo.compare`` warns, naming the field, when two runs differ in any of these.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

from safetensors import safe_open

from zoo.io.lightning_checkpoint import read_checkpoint_file

# The page counts of the released OmniDocBench ground truths.
OMNIDOCBENCH_VERSIONS = {981: "v1.0", 1355: "v1.5"}
MATCH_METHOD = "quick_match"
# Fields that may differ between comparable runs: the time taken, where the (hashed) ground
# truth, the scored predictions and the page images lay.
NOT_SETTINGS = ("wall_time_s", "ground_truth", "predictions", "images")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def omnidocbench_version(n_pages: int) -> str:
    """The release a ground truth of ``n_pages`` pages looks like, else ``subset``."""
    return OMNIDOCBENCH_VERSIONS.get(n_pages, "subset")


def scoring_provenance(
    ground_truth: Path, predictions: Path, n_pages_in_file: int, page_filter: dict | None
) -> dict:
    """The ground truth (hash, pages, release it looks like), the predictions scored and how
    they were matched. Paths are absolute, so that ``zoo.compare --html`` finds the pages from
    any working directory."""
    return {
        "ground_truth": str(Path(ground_truth).resolve()),
        "predictions": str(Path(predictions).resolve()),
        "ground_truth_sha256": file_sha256(ground_truth),
        "ground_truth_pages": n_pages_in_file,
        "omnidocbench_version": omnidocbench_version(n_pages_in_file),
        "page_filter": page_filter,
        "match_method": MATCH_METHOD,
        "cdm_computed": False,
    }


def _tensor_names_and_config(path: Path) -> tuple[list[str], dict]:
    if path.is_dir():
        config = {
            file.name: json.loads(file.read_text(encoding="utf-8"))
            for file in sorted(path.glob("*.json"))
            if not file.name.endswith(".index.json")
        }
        names = []
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(file, framework="pt") as tensors:
                names += list(tensors.keys())
        return sorted(names), config
    checkpoint = read_checkpoint_file(path)
    return sorted(checkpoint.get("state_dict", {})), checkpoint.get("hyper_parameters", {})


def checkpoint_fingerprint(path: Path | str) -> dict:
    """A checkpoint's path and a SHA-256 of its configuration and tensor names (not of the
    weights, which would mean reading gigabytes): it tells architectures and layouts apart."""
    path = Path(path)
    names, config = _tensor_names_and_config(path)
    payload = json.dumps({"config": config, "tensors": names}, sort_keys=True, default=str)
    return {
        "path": str(path),
        "config_and_tensor_names_sha256": hashlib.sha256(payload.encode()).hexdigest(),
        "n_tensors": len(names),
    }


def git_commit() -> str | None:
    """The zoo's git commit (``+dirty`` with local changes), None outside a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def zoo_provenance() -> dict:
    """The zoo's version and git commit."""
    try:
        version = metadata.version("deepencoder-zoo")
    except metadata.PackageNotFoundError:
        version = None
    return {"zoo_version": version, "zoo_git_commit": git_commit()}


def flatten(provenance: dict, prefix: str = "") -> dict:
    """Nested fields as ``a.b`` keys, for comparing runs field by field."""
    flat = {}
    for key, value in provenance.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: object) -> str:
    """A value in a warning: JSON on one line, a nested record summarised."""
    return "{...}" if isinstance(value, dict) else json.dumps(value, ensure_ascii=False)


def provenance_differences(provenances: dict[str, dict], prefix: str = "") -> list[str]:
    """One warning per setting that differs between the named runs' provenance; a nested
    record that some run lacks (predictions scored as given have no ``generation``) is one
    warning, not one per field."""
    fields = dict.fromkeys(field for provenance in provenances.values() for field in provenance)
    warnings = []
    for field in fields:
        if field in NOT_SETTINGS:
            continue
        values = {name: provenance.get(field) for name, provenance in provenances.items()}
        if all(isinstance(value, dict) for value in values.values()):
            warnings += provenance_differences(values, f"{prefix}{field}.")
        elif len({json.dumps(value, sort_keys=True, default=str) for value in values.values()}) > 1:
            listed = "; ".join(f"{name}: {_shown(value)}" for name, value in values.items())
            warnings.append(f"runs differ in {prefix}{field} ({listed})")
    return warnings
