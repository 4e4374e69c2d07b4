"""A run directory on disk: atomic writes, the results.json schema, and checkpoints that load without
executing code (``torch.load(weights_only=True)``; final weights also as safetensors)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from lifelong import metrics
from lifelong.config import Config, build_config, difference, load_yaml
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
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files follow the user's umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write '{path}': {err.strerror or err}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMP_PREFIXES = tuple(f".{name}." for name in ("config.yaml", "results.json", "metrics.jsonl", "checkpoint.pt",
                                                "model.safetensors"))


def remove_temp_files(run_dir: Path) -> None:
    """Delete hidden temporary files that a killed write left behind (never a run's real files)."""
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            if path.name.startswith(TEMP_PREFIXES) and path.is_file():
                path.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def run_directory(cfg: Config) -> Path:
    """Where a config's run lives: deterministic, so re-running a config finds its earlier run."""
    name = f"{cfg.data.benchmark}-{cfg.method}-seed{cfg.seed}-{cfg.fingerprint()[:8]}"
    return Path(cfg.out) / name


def data_changed(run_dir: Path, cfg: Config, recorded: dict[str, Any] | None = None) -> str:
    """Why a run of your own data no longer matches: its files changed (the config being the same); "" otherwise."""
    if cfg.data.source is None or (recorded is not None and difference(recorded, cfg.to_dict())):
        return ""
    return (f"the files of data.source ('{cfg.data.source.path}') changed since the run was made{'' if recorded else ' (or config.yaml was edited)'}; "
            f"train on them in a new directory with `lifelong run --config {run_dir / CONFIG_FILE}`, or restore the "
            "files to continue this run")


def check_directory_name(run_dir: Path, cfg: Config) -> None:
    """Refuse a config.yaml edited after its directory was named (the name ends in the config's hash)."""
    match = re.fullmatch(r".+-([0-9a-f]{8})", run_dir.name)
    if match and match.group(1) != cfg.fingerprint()[:8]:
        if reason := data_changed(run_dir, cfg):
            raise UserError(reason)
        raise UserError(f"'{run_dir / CONFIG_FILE}' was edited after the run was made (its hash "
                        f"{cfg.fingerprint()[:8]} is not the directory's {match.group(1)}); restore it, or run the "
                        "edited config with `lifelong run --config FILE`, which makes its own directory")


def write_config(run_dir: Path, cfg: Config) -> None:
    atomic_write_bytes(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def read_config(run_dir: Path) -> Config:
    """The config a run directory was made with; a directory that is not a run is a user error."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}); pass a directory made by lifelong run")
    try:
        raw = load_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        raise UserError(f"'{path}' is not valid YAML; the run directory is damaged") from None
    if not isinstance(raw, dict):
        raise UserError(f"'{path}' must hold a mapping of config keys, got {type(raw).__name__}; "
                        "the run directory is damaged")
    cfg = build_config(raw)
    cfg.out = str(run_dir.parent)
    return cfg


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        results = None
    if not isinstance(results, dict):
        raise UserError(f"'{path}' is not a results file; delete it and run `lifelong resume {run_dir}`")
    missing = [key for key in RESULT_KEYS if key not in results]
    if missing:
        raise UserError(f"'{path}' lacks {', '.join(missing)}; delete it and run `lifelong resume {run_dir}`")
    if problem := _figures_problem(results):
        raise UserError(f"'{path}' is damaged ({problem}); delete it and run `lifelong resume {run_dir}`")
    return results


def _figures_problem(results: dict[str, Any]) -> str | None:
    """What is wrong with a results file's figures (None: nothing): one accuracy row per task, one number per task
    in each row, the summary figures numbers."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    tasks, matrix = results["tasks"], results["acc_matrix"]
    if not isinstance(tasks, list) or not tasks:
        return "tasks is not a list of tasks"
    if not isinstance(matrix, list) or len(matrix) != len(tasks):
        return f"acc_matrix needs one row per task ({len(tasks)})"
    if any(not isinstance(row, list) or len(row) != len(tasks) or not all(map(number, row)) for row in matrix):
        return f"each acc_matrix row needs {len(tasks)} accuracies"
    bad = [k for k in ("acc", "bwt", "max_forgetting", "train_seconds") if not number(results[k])]
    bad += [] if results["fwt"] is None or number(results["fwt"]) else ["fwt"]
    bad += [] if isinstance(results["forgetting"], list) and all(map(number, results["forgetting"])) else ["forgetting"]
    if bad:
        return f"{', '.join(bad)} not a number"
    init = results.get("random_init_acc")
    if init is not None and (not isinstance(init, list) or len(init) != len(tasks) or not all(map(number, init))):
        return f"random_init_acc needs {len(tasks)} accuracies"
    try:  # the summary figures are functions of the matrix: an edit to either shows
        expected = metrics.summarize(matrix, init)
    except ValueError as err:
        return str(err)
    stored = {k: results[k] for k in ("acc", "bwt", "fwt", "max_forgetting", "forgetting")}
    disagree = [k for k, v in stored.items() if not _same_figure(v, expected[k])]
    return f"{', '.join(disagree)} disagree with acc_matrix" if disagree else None


def _same_figure(stored: Any, expected: Any) -> bool:
    """Whether a stored figure (a number, a list of them, or None) is the recomputed one, up to rounding."""
    if isinstance(expected, list):
        return isinstance(stored, list) and len(stored) == len(expected) and all(map(_same_figure, stored, expected))
    if expected is None or stored is None:
        return expected is None and stored is None
    return math.isclose(stored, expected, rel_tol=1e-9, abs_tol=1e-9)


def read_for_viewing(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's results for report and inspect: refused when config.yaml was edited after the run (the
    results would be shown under settings that did not make them); runs of earlier versions and of own data whose
    files have changed or moved since are shown as they were made."""
    cfg = read_config(run_dir)
    results = read_results(run_dir)
    if results is not None and isinstance(results.get("config"), dict) and (
            differs := difference(results["config"], cfg.to_dict())):
        raise UserError(f"'{run_dir / CONFIG_FILE}' was edited after the run was made ({differs}); restore it")
    return results


def read_finished(run_dir: Path, cfg: Config) -> dict[str, Any] | None:
    """The results of a finished run of ``cfg``; results made by another config are an error saying what differs."""
    results = read_results(run_dir)
    if results is None:
        return None
    recorded = results.get("fingerprint")
    if recorded is None:  # results.json of an earlier version: the config it holds tells
        try:
            recorded = build_config(results["config"]).fingerprint()
        except (UserError, TypeError):
            recorded = ""
    if recorded != cfg.fingerprint():
        if isinstance(results.get("config"), dict) and (reason := data_changed(run_dir, cfg, results["config"])):
            raise UserError(reason)
        recorded_config = results.get("config")
        differs = difference(recorded_config, cfg.to_dict()) if isinstance(recorded_config, dict) else "none recorded"
        if not differs:
            raise UserError(f"the results in '{run_dir}' were made by an earlier version of lifelong, whose results "
                            "for this config differ (a method's revision was raised: docs/runs.md); train it again "
                            f"with `lifelong run --config {run_dir / CONFIG_FILE} --force`")
        raise UserError(f"the results in '{run_dir}' were made by another config than {CONFIG_FILE} ({differs}); "
                        f"restore the config, or delete {RESULTS_FILE} and run `lifelong resume {run_dir}`")
    return results


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON line per event; flushed so a crash loses at most the line being written."""
    try:
        with open(run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as err:
        raise UserError(f"cannot write '{run_dir / METRICS_FILE}': {err.strerror or err}") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl (a torn last line from a crash is skipped)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
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
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or unsafe files
        raise UserError(
            f"checkpoint '{path}' cannot be loaded safely ({type(err).__name__}); delete it to restart the run"
        ) from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a checkpoint; delete it to "
                        "restart the run")
    return ckpt


def run_files(run_dir: Path) -> dict[str, Path]:
    """The run's files that exist, by name: config, metrics, results and weights (what a logger may keep)."""
    names = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, WEIGHTS_FILE)
    return {name: run_dir / name for name in names if (run_dir / name).is_file()}


def save_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Final network weights as safetensors, for deployment or inspection."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = run_dir / f".{WEIGHTS_FILE}.tmp"
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, run_dir / WEIGHTS_FILE)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write '{run_dir / WEIGHTS_FILE}': {err.strerror or err}") from None
