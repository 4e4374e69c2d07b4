"""A run directory on disk: atomic writes, the results.json schema, and checkpoints that load without
executing code (``torch.load(weights_only=True)``; final weights also as safetensors)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from lifelong.config import Config, build_config
from lifelong.errors import UserError

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"

RESULT_KEYS = [
    "acc_matrix", "acc", "bwt", "fwt", "forgetting", "max_forgetting", "tasks", "method", "benchmark", "scenario",
    "seed", "config", "train_seconds", "peak_rss_mb", "lifelong_version",
]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def run_directory(cfg: Config) -> Path:
    """Where a config's run lives: deterministic, so re-running a config finds its earlier run."""
    name = f"{cfg.data.benchmark}-{cfg.method}-seed{cfg.seed}-{cfg.fingerprint()[:8]}"
    return Path(cfg.out) / name


def write_config(run_dir: Path, cfg: Config) -> None:
    atomic_write_bytes(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def read_config(run_dir: Path) -> Config:
    """The config a run directory was made with; a directory that is not a run is a user error."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}); pass a directory made by lifelong run")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"'{path}' is not valid YAML; the run directory is damaged") from None
    cfg = build_config(raw)
    cfg.out = str(run_dir.parent)
    return cfg


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"'{path}' is not valid JSON; delete it and run `lifelong resume {run_dir}`") from None


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON line per event; flushed so a crash loses at most the line being written."""
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl (a torn last line from a crash is skipped)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_metrics(run_dir: Path, keep: int) -> None:
    """Drop lines logged after the checkpoint being resumed from, so none appear twice."""
    records = read_metrics(run_dir)[:keep]
    atomic_write_bytes(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records).encode())


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The latest checkpoint, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or unsafe files
        raise UserError(
            f"checkpoint '{path}' cannot be loaded safely ({type(err).__name__}); delete it to restart the run"
        ) from None


def run_files(run_dir: Path) -> dict[str, Path]:
    """The run's files that exist, by name: config, metrics, results and weights (what a logger may keep)."""
    names = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, WEIGHTS_FILE)
    return {name: run_dir / name for name in names if (run_dir / name).is_file()}


def save_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Final network weights as safetensors, for deployment or inspection."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = run_dir / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / WEIGHTS_FILE)
