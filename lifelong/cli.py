"""The `lifelong` command: run, resume, compare, sweep, report, inspect, list, download, serve.

Exit codes: 0 success, 2 bad input (one line on stderr naming the problem and the fix), 1 internal error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lifelong.errors import UserError

# flag name → dotted config key it sets
RUN_FLAGS = {
    "method": "method",
    "model": "model.name",
    "benchmark": "data.benchmark",
    "scenario": "data.scenario",
    "epochs": "train.epochs",
    "iterations": "train.iterations",
    "seed": "seed",
    "data_dir": "data.data_dir",
    "out": "out",
    "device": "device",
    "max_tasks": "data.max_tasks",
    "train_fraction": "data.train_fraction",
    "logger": "logger",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifelong", description="Continual learning: train one network on a sequence of tasks and measure "
                                     "what it kept, lost and transferred.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train a method on a benchmark (no arguments: the quickstart)",
                         description="Train a method on a benchmark and write a run directory. With no arguments, "
                                     "runs the quickstart on the Fashion-MNIST subset shipped with the package.")
    run.add_argument("--config", metavar="FILE", help="YAML config file (flags and --set override it)")
    run.add_argument("--method", help="method name (see `lifelong list methods`)")
    run.add_argument("--model", help="backbone name (see `lifelong list models`)")
    run.add_argument("--benchmark", help="benchmark name (see `lifelong list benchmarks`)")
    run.add_argument("--scenario", help="task, class or domain (default: the benchmark's)")
    run.add_argument("--epochs", help="epochs per task")
    run.add_argument("--iterations", help="optimizer steps per task (overrides --epochs)")
    run.add_argument("--seed", help="random seed; equal seeds give identical results on CPU")
    run.add_argument("--data-dir", help="folder holding the datasets (else $LIFELONG_DATA, ~/.cache/lifelong, "
                                        "/usr/share/datasets)")
    run.add_argument("--download", action="store_true", help="download missing datasets from their official URLs")
    run.add_argument("--out", help="parent folder of run directories (default: runs)")
    run.add_argument("--device", help="auto, cpu or cuda")
    run.add_argument("--max-tasks", help="use only the first N tasks")
    run.add_argument("--train-fraction", help="use a stratified fraction of each task's training data")
    run.add_argument("--logger", help="none, tensorboard, mlflow, or several comma-separated (docs/tracking.md; "
                     "`lifelong list loggers`)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config key, e.g. --set train.lr=0.01 --set model.hidden=[100,100]")
    origin = run.add_argument_group("document 000's command (docs/methods.md, gs-mask)")
    origin.add_argument("--dataset", help="pmnist, cifar100 or multi: the paper's gs-mask protocol on that data")
    origin.add_argument("--meta-learn", help="True or False: gs-mask's meta-iteration (False = the ablation)")
    origin.add_argument("--task-reg", help="gs_mask: method gs-mask")
    origin.add_argument("--num-iterations", help="outer steps of each gs-mask meta-iteration phase")
    run.add_argument("--probe", action="store_true", help="after each task, the linear-probe accuracy of the frozen "
                                                          "features on every task (train.probe; docs/inspect.md)")
    run.add_argument("--force", action="store_true", help="start over even if this config already has a run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    resume = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint",
                            description="Continue a run from its last completed epoch or task.")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = sub.add_parser(
        "compare", help="run methods × seeds on one benchmark and tabulate mean ± std",
        description="Run every variant × seed (finished runs are reused), then print and write a table of mean ± std "
                    "of ACC, BWT, FWT, average and maximum forgetting and train time. Either name methods with "
                    "--methods, or give an experiment file (--config with a `variants` list).")
    compare.add_argument("--config", metavar="FILE", help="base config, or an experiment file with `variants`")
    compare.add_argument("--benchmark", help="benchmark name")
    compare.add_argument("--methods", help="comma-separated method names, e.g. naive,ewc,mas")
    compare.add_argument("--seeds", help="comma-separated seeds (default 0)")
    compare.add_argument("--data-dir", help="folder holding the datasets")
    compare.add_argument("--epochs", help="epochs per task")
    compare.add_argument("--iterations", help="optimizer steps per task (overrides --epochs)")
    compare.add_argument("--model", help="backbone name (see `lifelong list models`)")
    compare.add_argument("--scenario", help="task, class or domain (default: the benchmark's)")
    compare.add_argument("--device", help="auto, cpu or cuda")
    compare.add_argument("--max-tasks", help="use only the first N tasks")
    compare.add_argument("--train-fraction", help="use a stratified fraction of each task's training data")
    compare.add_argument("--out", help="parent folder of the run directories (default: runs)")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    compare.add_argument("--references", action="store_true",
                         help="also run single-task references: forgetting against each task's a_t")
    compare.add_argument("--order-sweep", metavar="CLASSES",
                         help="move the task with these classes (e.g. 1,2) through every position of the order")
    where = compare.add_argument_group("where the runs train (docs/compare.md)")
    where.add_argument("--jobs", metavar="N", help="N runs at a time, each in its own process with cores // N torch "
                                                  "threads (default 1: one after another in this process)")
    where.add_argument("--executor", help="serial, processes (the default with --jobs N > 1) or ray (each run a "
                                          "Ray task; pip install 'lifelong[ray]')")
    where.add_argument("--address", help="with --executor ray: the cluster's HOST:PORT, or auto for the one "
                                         "started here with `ray start` (default: a local Ray instance)")
    where.add_argument("--retries", metavar="N", help="times a run whose worker died is started again (default 2)")
    where.add_argument("--plan", action="store_true", help="train nothing: write one config file per run and print "
                                                           "their paths, one per line (for SLURM arrays)")
    where.add_argument("--collect", action="store_true", help="train nothing: build the summary from the run "
                                                              "directories alone")

    sweep = sub.add_parser(
        "sweep", help="search hyperparameters (grid or random) and choose on validation accuracy",
        description="Run every trial × seed of a sweep file (finished runs are reused), choose the trial with the "
                    "best validation accuracy over every task seen (never test data), and write trials.md/csv and "
                    "best.yml, a runnable config of the chosen trial (docs/sweeps.md).")
    sweep.add_argument("--config", metavar="SWEEP.yml", required=True, help="the sweep file: base, params, search")
    sweep.add_argument("--data-dir", help="folder holding the datasets")
    sweep.add_argument("--out", help="parent folder of the run directories (default: the base's out, else runs)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    sweep.add_argument("--best-out", metavar="FILE", help="also write the chosen config to FILE "
                                                          "(e.g. configs/best/split-mnist-task-ewc.yml)")
    sweep.add_argument("--jobs", metavar="N", help="N runs at a time in their own processes")
    sweep.add_argument("--executor", help="serial, processes or ray (as for compare)")
    sweep.add_argument("--address", help="with --executor ray: the cluster's HOST:PORT, or auto")
    sweep.add_argument("--retries", metavar="N", help="times a run whose worker died is started again (default 2)")

    report = sub.add_parser(
        "report", help="write an HTML report with figures from run directories",
        description="Group finished runs by variant (runs differing only in the seed) and write one self-contained "
                    "HTML file with the summary table and figures, plus the figures as PNG and SVG beside it.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories, compare folders, or folders holding run directories (e.g. runs)")
    report.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")

    inspect_cmd = sub.add_parser(
        "inspect", help="what a run's model protects and has left: importance, ownership, masks, memory, probe",
        description="Tables and figures of a finished run's diagnostics (saved after each task, no retraining): "
                    "importance per layer, gs-mask filter ownership, MARK mask and SLNI activation sparsity, the "
                    "replay memory's classes, the linear probe (docs/inspect.md).")
    inspect_cmd.add_argument("run_dir", metavar="RUN_DIR")
    inspect_cmd.add_argument("--out", metavar="DIR", help="folder for the figures (PNG, SVG); default RUN_DIR/inspect")

    listing = sub.add_parser("list", help="list methods, benchmarks, models, datasets, scenarios and loggers, or "
                                          "the settings of one method, config section or model",
                             description="List what can be named in a config, with one-line descriptions; "
                                         "`lifelong list ewc` (a method), `lifelong list train` (a config section) "
                                         "or `lifelong list mlp` (a model) lists its keys with their defaults.")
    listing.add_argument("what", nargs="?", metavar="WHAT",
                         help="methods, benchmarks, models, datasets, scenarios, loggers, or a method, config "
                              "section or model name")

    download = sub.add_parser("download", help="download a dataset from its official source",
                              description="Download a dataset, verify its checksums and store it atomically.")
    download.add_argument("dataset", help="dataset name (see `lifelong list datasets`)")
    download.add_argument("--data-dir", help="where to store it (default: $LIFELONG_DATA or ~/.cache/lifelong)")

    from lifelong.serve import command as serve_command  # argparse only; the server is imported when it runs

    serve_command.add_arguments(sub.add_parser(
        "serve", help="serve a model over HTTP that keeps learning from labelled samples (docs/serve.md)",
        description="Answer predictions while learning from labelled samples sent to the service, with the run's "
                    "method; every accepted sample is journaled before the reply. Needs lifelong[serve]."))
    return parser


def _run_settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The config file's dict plus ``key=value`` assignments from flags, then from --set (later wins)."""
    from lifelong.config import merge, read_yaml
    from lifelong.presets import gs_mask_preset, origin_assignments

    if args.dataset is not None and args.config:
        raise UserError("--dataset loads document 000's preset config; use either --dataset or --config")
    if args.dataset is not None and args.benchmark is not None:
        raise UserError("--dataset loads document 000's preset with its own benchmark; use either --dataset or "
                        "--benchmark")
    raw = gs_mask_preset(args.dataset) if args.dataset is not None else read_yaml(args.config) if args.config else {}
    if "variants" in raw or {"base", "params"} <= set(raw):  # an experiment or a sweep file, not one run's config
        command = "compare" if "variants" in raw else "sweep"
        raise UserError(f"'{args.config}' describes several runs ({'variants' if command == 'compare' else 'params'}"
                        f"); run it with `lifelong {command} --config {args.config}`")
    for key, value in origin_assignments(args.meta_learn, args.task_reg, args.num_iterations).items():
        merge(raw, key.split("."), value)
    for flag, key in RUN_FLAGS.items():  # flag values stay strings (paths are not YAML); pydantic converts numbers
        if getattr(args, flag) is not None:
            merge(raw, key.split("."), getattr(args, flag))
    method = next((s.split("=", 1)[1] for s in reversed(args.set) if s.startswith("method=")), raw.get("method"))
    if (args.meta_learn is not None or args.num_iterations is not None) and method != "gs-mask":
        raise UserError("--meta-learn and --num-iterations set gs-mask's meta-iteration; add --task-reg gs_mask (or "
                        "--method gs-mask)")
    if args.download:
        merge(raw, ["data", "download"], True)
    if args.probe:
        merge(raw, ["train", "probe"], True)
    return raw, list(args.set)


def _print_results(console: Console, run_dir: Path, results: dict[str, Any]) -> None:
    matrix = results["acc_matrix"]
    table = Table(title=f"{results['method']} on {results['benchmark']} ({results['scenario']}-incremental), "
                        f"seed {results['seed']}: accuracy after each task")
    table.add_column("after task")
    for j in range(len(matrix[0])):
        table.add_column(f"T{j + 1}", justify="right")
    for i, row in enumerate(matrix):
        table.add_row(str(i + 1), *[f"{v:.3f}" if j <= i else f"[dim]{v:.3f}[/dim]" for j, v in enumerate(row)])
    console.print(table)
    fwt = "n/a" if results["fwt"] is None else f"{results['fwt']:+.4f}"
    forgetting = " ".join(f"{v:.3f}" for v in results["forgetting"]) or "n/a"
    console.print(f"ACC {results['acc']:.4f}   BWT {results['bwt']:+.4f}   FWT {fwt}   "
                  f"forgetting per task [{forgetting}]  avg {results['avg_forgetting']:.4f}  "
                  f"max {results['max_forgetting']:.4f}")
    console.print(f"train time {results['train_seconds']:.1f} s, peak memory {results['peak_rss_mb']:.0f} MB")
    console.print(f"Run directory: {run_dir}")


def _list(console: Console, what: str | None) -> None:
    from lifelong.data.benchmarks import BENCHMARKS
    from lifelong.data.scenarios import SCENARIOS
    from lifelong.data.sources import DATASETS
    from lifelong.loggers import LOGGERS
    from lifelong.methods import METHODS
    from lifelong.models import MODELS

    sections = {
        "methods": {name: m.description for name, m in METHODS.items()},
        "benchmarks": {name: f"{b.description} [default scenario: {b.scenario}]" for name, b in BENCHMARKS.items()},
        "models": {name: desc for name, (_, desc) in MODELS.items()},
        "datasets": {name: d.description for name, d in DATASETS.items()},
        "scenarios": SCENARIOS,
        "loggers": {name: logger.description for name, logger in LOGGERS.items()},
    }
    if what is not None and what not in sections:
        _list_settings(console, what)
        return
    for title, entries in sections.items():
        if what in (None, title):
            table = Table(title=title, show_header=False, title_justify="left")
            table.add_column(style="bold")
            table.add_column()
            for name, desc in entries.items():
                table.add_row(escape(name), escape(desc))
            console.print(table)


def _list_settings(console: Console, name: str) -> None:
    """The keys of method ``name``'s section, of config section ``name`` or of model ``name``: default, meaning."""
    from lifelong.config import settings_of
    from lifelong.models import MODELS

    found = settings_of(name)
    if found is not None:
        title, fields = found
        rows = [(key, _default_text(field), field.description or "") for key, field in fields.items()]
    elif name in MODELS:
        title = f"model {name}: its options (model.KEY)"
        rows = [(key, _default_text(parameter.default), "") for key, parameter in
                inspect.signature(MODELS[name][0]).parameters.items()
                if key != "in_shape" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD]
    else:
        raise UserError(f"nothing called '{name}' to list; give methods, benchmarks, models, datasets, scenarios, "
                        "loggers, or a method, config section or model name (see `lifelong list`)")
    if not rows:
        console.print(f"{title}: none")
        return
    columns = ("key", "default", "meaning") if any(meaning for *_, meaning in rows) else ("key", "default")
    console.print(escape(title))
    table = Table()
    for column in columns:
        table.add_column(column, style="bold" if column == "key" else None)
    for row in rows:
        table.add_row(*(escape(text) for text in row[: len(columns)]))
    console.print(table)


def _default_text(default: Any) -> str:
    """A default as a config would spell it ("required" when there is none)."""
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticUndefined

    if isinstance(default, FieldInfo):
        default = default.default_factory() if default.default_factory is not None else default.default
    if default is PydanticUndefined or default is inspect.Parameter.empty:
        return "required"
    try:
        return json.dumps(default)
    except TypeError:
        return repr(default)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers, got '{text[:200]}'") from None
    if not values:
        raise UserError(f"{flag} expects comma-separated integers, got '{text[:200]}' (e.g. {flag} 0,1,2)")
    return values


def _experiment(args: argparse.Namespace):
    """The experiment described by the compare flags (and possibly an experiment file)."""
    from lifelong.compare import experiment_from_dict
    from lifelong.config import merge, parse_set, read_yaml

    raw = read_yaml(args.config) if args.config else {}
    exp = dict(raw) if "variants" in raw else {"base": raw}
    if args.methods:
        exp["variants"] = [{"name": m.strip(), "set": {"method": m.strip()}} for m in args.methods.split(",") if m]
    if "variants" not in exp:
        raise UserError("compare needs --methods (e.g. --methods naive,ewc) or an experiment file with `variants`")
    base = exp.setdefault("base", {})
    flags = {flag: RUN_FLAGS[flag] for flag in ("benchmark", "data_dir", "epochs", "iterations", "model", "scenario",
                                                "device", "max_tasks", "train_fraction", "out")}
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            merge(base, key.split("."), getattr(args, flag))
    for assignment in args.set:
        merge(base, *parse_set(assignment))
    if args.seeds is not None:
        exp["seeds"] = _int_list(args.seeds, "--seeds")
    if args.references:
        exp["references"] = True
    if args.order_sweep is not None:
        exp["order_sweep"] = {"task": _int_list(args.order_sweep, "--order-sweep")}
    return experiment_from_dict(exp)


def _print_summary(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    from lifelong import compare

    table = Table(title=title)
    columns = [c for c in compare.COLUMNS if any(row[c] is not None for row in rows)]
    for column in columns:
        table.add_column(compare.HEADERS[column], justify="left" if column == "variant" else "right", overflow="fold")
    for row in rows:
        table.add_row(*[compare.fmt(row[c], digits=1 if c == "train_seconds" else 3) for c in columns])
    console.print(table)


def _report(console: Console, args: argparse.Namespace) -> None:
    from lifelong.report import write_report

    folder, rows, found = write_report(args.run_dirs, args.out)
    for path in found.skipped:
        console.print(f"left out {path}: unfinished (no results.json)")
    _print_summary(console, f"{found.runs[0].results['benchmark']}: mean ± std over seeds", rows)
    console.print(f"Report written to {args.out}; figures (PNG, SVG) and summary.md/csv in {folder}")


def _track_report(run_dir: Path, cfg: Any) -> None:
    """With logger mlflow, the run's report goes to its MLflow run too (docs/tracking.md)."""
    if "mlflow" in cfg.logger:
        from lifelong.tracking import log_report

        log_report(run_dir, cfg)


def _inspect(console: Console, args: argparse.Namespace) -> None:
    from lifelong import inside

    found = inside.read(args.run_dir)
    for title, header, rows in inside.tables(found):
        table = Table(title=escape(title), title_justify="left")
        for i, name in enumerate(header):
            table.add_column(escape(name), justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*map(escape, row))
        console.print(table)
    if found.empty:
        console.print(f"{found.results['method']} saved no diagnostics and the run has no probe (train.probe); "
                      "docs/inspect.md lists what each method saves")
        return
    folder = Path(args.out) if args.out else found.run_dir / "inspect"
    console.print(f"{len(inside.write_figures(found, folder))} figures (PNG, SVG) written to {folder}")


def _count(text: str | None, flag: str, default: int, least: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{flag} expects a whole number, got '{text[:40]}'") from None
    if value < least:
        raise UserError(f"{flag} must be at least {least}, got {value}")
    return value


def _compare(console: Console, args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from lifelong import compare
    from lifelong.config import build_config
    from lifelong.executors import make_executor

    exp = _experiment(args)
    base = build_config(exp.base)
    out_dir = compare.folder(exp)
    jobs, retries = _count(args.jobs, "--jobs", 1, 1), _count(args.retries, "--retries", 2, 0)
    if args.plan or args.collect:
        if args.plan and args.collect:
            raise UserError("--plan writes the runs' configs and --collect reads their results; use one at a time")
        given = [flag for flag, value in (("--jobs", args.jobs), ("--executor", args.executor),
                                          ("--address", args.address), ("--retries", args.retries)) if value]
        if given:
            raise UserError(f"{given[0]} does not apply with {'--plan' if args.plan else '--collect'}, which train "
                            "nothing")
    if args.plan:
        for path in compare.write_plan(exp):
            sys.stdout.write(f"{path}\n")  # plain lines, never wrapped: `sed -n ${SLURM_ARRAY_TASK_ID}p`
        return
    if args.collect:
        entries = compare.collect(exp)
    else:
        executor = make_executor(args.executor, jobs, args.address, retries)
        with Progress(console=console) as bar:
            task = bar.add_task("runs", total=len(compare.plan(exp)))
            entries = compare.run_experiment(exp, executor=executor, progress=lambda i, n, what: bar.update(
                task, completed=i, description=f"runs ({what})"))
    rows = compare.summarize(entries)
    failed = compare.failures(entries)
    sweep = compare.order_sweep_table(entries, exp.order_sweep.task) if exp.order_sweep else None
    compare.write_tables(out_dir, rows, sweep, failed)
    compare.write_manifest(out_dir, entries, exp.order_sweep.task if exp.order_sweep else None)
    if "mlflow" in base.logger:  # one parent MLflow run, the runs its children (docs/tracking.md)
        from lifelong.tracking import log_compare

        console.print(f"MLflow parent run {log_compare(out_dir, entries, base)}")
    over = f"seeds {exp.seeds}" + (" and the sweep's task orders (lifelong report splits them)" if exp.order_sweep
                                   else "")
    _print_summary(console, f"{base.data.benchmark}: mean ± std over {over}", rows)
    if sweep:
        for row in sweep:
            positions = "  ".join(f"{p}: {v:.3f}" for p, v in row["final_acc_by_position"].items())
            console.print(f"{row['variant']}: final accuracy of task {exp.order_sweep.task} by position "
                          f"[{positions}]  spread {row['spread']:.3f}")
    for f in failed:
        console.print(f"failed: {escape(f['variant'])} seed {f['seed']}: {escape(f['error'])}", soft_wrap=True)
    console.print(f"Tables written to {out_dir}/summary.md and summary.csv; figures: lifelong report {out_dir}")
    if failed:
        first = failed[0]
        raise UserError(f"{len(failed)} of {len(entries)} runs {'are not finished' if args.collect else 'failed'} "
                        f"(first: {first['variant']} seed {first['seed']}: {first['error']}); all are listed in "
                        f"{out_dir / 'summary.md'}")


def _sweep(console: Console, args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from lifelong import compare, sweep
    from lifelong.config import merge, parse_set
    from lifelong.executors import make_executor

    raw = sweep.read_sweep_file(args.config)
    base = raw["base"]
    for flag, key in (("data_dir", "data.data_dir"), ("out", "out")):
        if getattr(args, flag) is not None:
            merge(base, key.split("."), getattr(args, flag))
    for assignment in args.set:
        merge(base, *parse_set(assignment))
    spec = sweep.sweep_from_dict(raw)
    executor = make_executor(args.executor, _count(args.jobs, "--jobs", 1, 1), args.address,
                             _count(args.retries, "--retries", 2, 0))
    with Progress(console=console) as bar:
        task = bar.add_task("trials", total=len(compare.plan(sweep.experiment(spec))))
        rows, best = sweep.run_sweep(spec, executor, progress=lambda i, n, what: bar.update(
            task, completed=i, description=f"runs ({what})"))
    folder = sweep.write_outputs(spec, rows, best, Path(args.best_out) if args.best_out else None, args.config)
    table = Table(title=f"sweep {spec.name}: {len(rows)} trials, best first (chosen on validation ACC)")
    for column in ("trial", "runs", "val ACC", "test ACC", "train s", "error"):
        table.add_column(column, justify="left" if column in ("trial", "error") else "right", overflow="fold")
    for row in rows:
        table.add_row(escape(row["trial"]), str(row["runs"]), compare.fmt(row["val_acc"], 3),
                      compare.fmt(row["acc"], 3), compare.fmt(row["train_seconds"], 1), escape((row["error"] or "")[:80]))
    console.print(table)
    if best is None:
        raise UserError(f"every trial failed; their errors are in {folder / 'trials.md'}")
    console.print(f"Chosen: {escape(best['trial'])} (val ACC {best['val_acc'][0]:.4f}); its config: "
                  f"{folder / 'best.yml'}{f' and {args.best_out}' if args.best_out else ''}; all trials: "
                  f"{folder / 'trials.md'}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """The command line; warnings are shown as ``lifelong: warning: ...`` lines (not Python's file:line form)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _main(argv)


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"lifelong: warning: {message}", file=sys.stderr)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        print(f"lifelong: error: options come after a command; did you mean `lifelong run {' '.join(argv)[:200]}`?",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    console = Console()
    run_dir = None  # the run being trained, for the message after Ctrl-C
    try:
        if args.command in (None, "run"):
            from lifelong.config import build_config
            from lifelong.loop import run

            if args.command is None:  # bare `lifelong` = `lifelong run`
                args = _parser().parse_args(["run", *(argv or [])])
            raw, sets = _run_settings(args)
            cfg = build_config(raw, sets)
            from lifelong import store
            from lifelong.data.benchmarks import check_data

            check_data(cfg.data)  # a data config that cannot work fails before "Running ..." (it loads nothing)
            run_dir = store.run_directory(cfg)
            if not args.force and store.read_results(run_dir) is not None:
                console.print("This config has already run; showing its results (--force trains again).")
            else:
                console.print(f"Running {cfg.method} on {cfg.data.benchmark} (seed {cfg.seed}) in {run_dir}")
            run_dir, results = run(cfg, progress=not args.quiet, force=args.force)
            _print_results(console, run_dir, results)
            _track_report(run_dir, cfg)
        elif args.command == "resume":
            from lifelong.loop import resume

            run_dir = Path(args.run_dir)
            console.print(f"Resuming {run_dir}")
            results = resume(run_dir, progress=not args.quiet)
            _print_results(console, run_dir, results)
            from lifelong.store import read_config

            _track_report(run_dir, read_config(run_dir))
        elif args.command == "compare":
            _compare(console, args)
        elif args.command == "sweep":
            _sweep(console, args)
        elif args.command == "report":
            _report(console, args)
        elif args.command == "inspect":
            _inspect(console, args)
        elif args.command == "list":
            _list(console, args.what)
        elif args.command == "serve":
            from lifelong.serve import command as serve_command

            serve_command.main(args, console)
        elif args.command == "download":
            from lifelong.data.sources import download_dataset, download_root

            folder = download_dataset(args.dataset, download_root(args.data_dir))
            console.print(f"{args.dataset} is ready in {folder}")
    except UserError as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the system refuses (too long, read-only, full disk, a folder for a file)
        where = f": '{str(err.filename)[:200]}'" if err.filename else ""
        print(f"lifelong: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("compare", "sweep"):
            print(f"lifelong: interrupted; run the same `lifelong {args.command}` again: finished runs are reused and "
                  "interrupted ones resume from their last checkpoint", file=sys.stderr)
        elif run_dir is not None and (run_dir / "config.yaml").is_file():
            print(f"lifelong: interrupted; continue with `lifelong resume {run_dir}`", file=sys.stderr)
        else:
            print("lifelong: interrupted before anything was saved; run the command again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
