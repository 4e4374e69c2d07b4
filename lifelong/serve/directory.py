"""Which directory a service lives in: a finished run, or a serving directory made for a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifelong import store
from lifelong.config import Config, build_config, difference
from lifelong.errors import UserError
from lifelong.serve.versions import CURRENT_FILE


def serving_directory(cfg: Config) -> Path:
    """Where ``lifelong serve --config`` keeps its versions and journal: named after the config."""
    return Path(cfg.out) / f"serve-{cfg.data.benchmark}-{cfg.method}-seed{cfg.seed}-{cfg.fingerprint()[:8]}"


def open_directory(run_dir: Path | None, run_config: dict[str, Any] | None, out: str | None) -> tuple[Path, Config]:
    """(directory, config): a finished run or a directory already serving, or the one for ``run_config``."""
    if run_config is not None:
        cfg = build_config(run_config)
        if out is not None:
            cfg.out = out
        directory = serving_directory(cfg)
        if (directory / store.CONFIG_FILE).is_file():
            on_disk = store.read_config(directory)
            if on_disk.fingerprint() != cfg.fingerprint():
                raise UserError(f"'{directory / store.CONFIG_FILE}' differs from the config "
                                f"({difference(cfg.to_dict(), on_disk.to_dict())}); restore it or move the directory")
        else:
            store.write_config(directory, cfg)
        return directory, cfg
    cfg = store.read_config(run_dir)
    if not (run_dir / "serve" / CURRENT_FILE).is_file():
        if store.read_finished(run_dir, cfg) is None or store.load_checkpoint(run_dir) is None:
            raise UserError(f"'{run_dir}' is not a finished run (no {store.RESULTS_FILE}); finish it with `lifelong "
                            f"resume {run_dir}`, or start from scratch with `lifelong serve --config FILE`")
    return run_dir, cfg
