"""The `lifelong serve` subcommand: its flags, and opening the service they describe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lifelong.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="a finished run (or a serving directory) to serve and keep training")
    parser.add_argument("--config", metavar="FILE", help="start from scratch with this run config (its `serve:` "
                                                         "section holds the service's settings)")
    parser.add_argument("--settings", metavar="FILE", help="YAML file of serve settings (docs/serve.md)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a serve setting, e.g. --set publish_every=100 --set guard.max_drop=0.1")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", help="TCP port (default 8000; 0 = any free port)")
    parser.add_argument("--token-file", metavar="FILE", help="file holding the bearer token (else $LIFELONG_SERVE_"
                                                             "TOKEN, else one is made in RUN_DIR/serve/token)")
    parser.add_argument("--out", help="with --config: parent folder of the serving directory (default: the config's "
                                      "out, runs)")


def settings_source(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(serve settings dict, run config dict or None) from --settings / --config and the flags."""
    from lifelong.config import read_yaml

    if (args.run_dir is None) == (args.config is None):
        raise UserError("lifelong serve takes a RUN_DIR or --config FILE (one of them)")
    if args.out is not None and args.config is None:
        raise UserError("--out applies with --config (a served run stays in its own directory)")
    run_config = read_yaml(args.config) if args.config else None
    raw = dict(run_config.pop("serve", None) or {}) if run_config is not None else {}
    if args.settings:
        raw = read_yaml(args.settings)
    for flag in ("host", "port"):
        if getattr(args, flag) is not None:
            raw[flag] = getattr(args, flag)
    return raw, run_config


def main(args: argparse.Namespace, console: Any) -> None:
    """Open the serving directory, then serve until interrupted."""
    from lifelong.serve.settings import build_settings

    raw, run_config = settings_source(args)
    settings = build_settings(raw, list(args.set))
    try:
        from lifelong.serve import app
    except ImportError as err:
        raise UserError(f"lifelong serve needs the serve extra ({err.name} is missing): "
                        "pip install 'lifelong[serve]'") from None
    app.serve(Path(args.run_dir) if args.run_dir else None, run_config, settings,
              Path(args.token_file) if args.token_file else None, args.out, console)
