"""The only place that iterates over tasks: train each task, evaluate every task, checkpoint, write results.

``run(config)`` starts (or finishes) the run a config describes; ``resume(run_dir)`` continues a crashed one
from its last checkpoint (end of the last completed epoch or task), giving the same results as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import resource
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lifelong import diagnostics, metrics, store
from lifelong.config import Config, ModelConfig, build_config, difference
from lifelong.data.batches import Stream, TaskView, eval_batches
from lifelong.data.benchmarks import build_benchmark
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError
from lifelong.learner import Learner, on_device, resolve_device
from lifelong.lock import run_lock
from lifelong.loggers import Loggers, open_loggers
from lifelong.methods import METHODS
from lifelong.methods.base import Method
from lifelong.probe import probe_accuracy
from lifelong.version import __version__

LOGGERS_PENDING = ".loggers-pending"  # in a finished run whose loggers have not taken its results yet


@dataclass
class LoopState:
    """Where the loop is, and what it has measured so far; saved in every checkpoint."""

    task: int = 0  # next task to train (or being trained)
    epoch: int = 0  # epochs of ``task`` already done
    random_init: list[float] = field(default_factory=list)
    acc_rows: list[list[float]] = field(default_factory=list)
    train_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    metrics_lines: int = 0
    samples: int = 0  # training rows seen so far, over every task (anytime evaluation counts them)
    anytime: list[dict[str, Any]] = field(default_factory=list)  # {"samples", "task", "acc": [tasks seen]}
    val_rows: list[list[float]] = field(default_factory=list)  # validation accuracy of every task after each task
    probe_init: list[float] = field(default_factory=list)  # train.probe: linear-probe accuracy, untrained network
    probe_rows: list[list[float]] = field(default_factory=list)  # train.probe: one row per task, like acc_rows


def build_method(cfg: Config, benchmark: Benchmark, device: torch.device) -> Method:
    """The configured method (or the variant its sections select) around fresh networks for the benchmark."""
    return Learner.for_benchmark(cfg, benchmark, device).method


def evaluate(learner: Learner, view: TaskView, batch_size: int) -> float:
    """Accuracy of ``learner`` on one split of one task."""
    correct = torch.zeros((), dtype=torch.int64, device=view.images.device)
    for x, y in eval_batches(view, batch_size):
        correct += (learner.scores(x, view.task.id).argmax(1) == y).sum()
    return int(correct) / max(1, len(view))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Checkpointer:
    """Saves loop state, method state and every random number generator in one atomic file."""

    def __init__(self, run_dir: Path, cfg: Config, data_rng: torch.Generator, device: torch.device):
        self.run_dir, self.fingerprint, self.data_rng, self.device = run_dir, cfg.fingerprint(), data_rng, device
        self.config, self.cfg = cfg.to_dict(), cfg

    def save(self, state: LoopState, method: Method) -> None:
        state.peak_rss_mb = max(state.peak_rss_mb, _rss_mb())
        store.save_checkpoint(self.run_dir, {
            "fingerprint": self.fingerprint,
            "config": self.config,
            "loop": asdict(state),
            "method": method.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "data": self.data_rng.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        })

    def restore(self, method: Method) -> LoopState | None:
        ckpt = store.load_checkpoint(self.run_dir)
        if ckpt is None:
            return None
        if ckpt.get("fingerprint") != self.fingerprint:
            if isinstance(ckpt.get("config"), dict) and (reason := store.data_changed(self.run_dir, self.cfg,
                                                                                        ckpt["config"])):
                raise UserError(reason)
            differs = difference(ckpt["config"], self.config) if isinstance(ckpt.get("config"), dict) else ""
            raise UserError(f"the checkpoint in '{self.run_dir}' does not match its config.yaml"
                            f"{f' ({differs})' if differs else ''}; restore the original config.yaml or delete "
                            "checkpoint.pt to start over")
        try:
            # the one device move: the file loads onto the CPU (map_location, where the RNG states must stay), the
            # method's whole state moves to the run's device here; no method moves its own (tests/test_device_move.py)
            method.load_state_dict(on_device(ckpt["method"], self.device))
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"the checkpoint in '{self.run_dir}' does not fit method '{method.name}' "
                            f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__}); delete "
                            "checkpoint.pt to start over") from None
        try:
            rng = ckpt["rng"]
            state = LoopState(**ckpt["loop"])
            torch.set_rng_state(rng["torch"])
            self.data_rng.set_state(rng["data"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise UserError(f"the checkpoint in '{self.run_dir}' is incomplete or damaged ({type(err).__name__}: "
                            f"{str(err)[:80]}); delete checkpoint.pt to start over") from None
        store.truncate_metrics(self.run_dir, state.metrics_lines)
        return state


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return not checks or bool(torch.stack(checks).all())


# torch.optim imports torch._dynamo when it builds its first optimizer (≈ 1.4 s on a small CPU, once per process);
# ``execute`` imports it before the train clock starts, so that ``train_seconds`` counts training, not an import.
_OPTIMIZER_IMPORT = "torch._dynamo"


def execute(cfg: Config, run_dir: Path, progress: bool = True,
            on_checkpoint: Callable[[LoopState], None] | None = None,
            on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train the configured method over the benchmark, checkpointing into ``run_dir``; returns results.

    ``on_start`` runs once device, data and method are ready, before anything is written (``run`` creates the
    run directory there, so a run that cannot start leaves none).
    """
    device = resolve_device(cfg.device)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    importlib.import_module(_OPTIMIZER_IMPORT)
    benchmark = build_benchmark(cfg.data, cfg.seed)
    learner = Learner.for_benchmark(cfg, benchmark, device)
    method = learner.method
    if on_start is not None:
        on_start()
    store.remove_temp_files(run_dir)
    tasks = benchmark.tasks
    data_rng = torch.Generator().manual_seed(cfg.seed)
    checkpointer = _Checkpointer(run_dir, cfg, data_rng, device)
    train_views = [TaskView(t, t.train, device) for t in tasks]
    test_views = [TaskView(t, t.test, device) for t in tasks]
    val_views = [TaskView(t, t.val, device) if t.val is not None else None for t in tasks]

    def log(record: dict[str, Any]) -> None:
        store.append_metrics(run_dir, record)
        state.metrics_lines += 1
        loggers.log(record)

    def evaluate_all() -> list[float]:
        return [evaluate(learner, v, cfg.train.eval_batch_size) for v in test_views]

    def probe_all() -> list[float]:  # the frozen features' linear-probe accuracy on every task (train.probe)
        return [probe_accuracy(method, train, test, cfg.train.eval_batch_size)
                for train, test in zip(train_views, test_views)]

    def evaluate_anytime(task: Task) -> None:
        """Accuracy on every task seen so far, mid-stream (train.eval_every)."""
        acc = [evaluate(learner, v, cfg.train.eval_batch_size) for v in test_views[: task.id + 1]]
        point = {"samples": state.samples, "task": task.id, "acc": acc}
        state.anytime.append(point)
        log({"event": "anytime", **point})

    def checkpoint() -> None:
        checkpointer.save(state, method)
        if on_checkpoint:
            on_checkpoint(state)

    def diverged(what: str) -> UserError:
        return UserError(f"training diverged: {what}; lower train.lr or the method's penalty strength (the run "
                         f"stays at its last checkpoint in '{run_dir}')")

    def check_weights(when: str) -> None:
        if not finite_weights(method.model):
            raise diverged(f"the network's weights are not finite after {when}")

    def train_task(task: Task, bar: Progress) -> None:
        """Train ``task`` from where ``state`` stands (a resumed run starts mid-task), then evaluate every task."""
        told = cfg.train.boundaries == "given" or task.id == 0  # a hidden boundary is not told to the method
        start = time.perf_counter()
        views = learner.start_task(task, train_views[: task.id + 1], told=told, resumed=state.epoch > 0)
        state.train_seconds += time.perf_counter() - start  # before_task may train (mark's first phases)
        stream = Stream(views, cfg.train.batch_size, data_rng, augment=cfg.data.augment)
        steps_per_epoch = len(stream)
        total_steps = steps_per_epoch if cfg.train.online else cfg.train.iterations or cfg.train.epochs * steps_per_epoch
        epochs = math.ceil(total_steps / steps_per_epoch)
        every = cfg.train.eval_every
        bar_id = bar.add_task(f"task {task.id + 1}/{len(tasks)}", total=total_steps,
                              completed=state.epoch * steps_per_epoch, info="")
        while state.epoch < epochs:
            start = time.perf_counter()
            learner.start_epoch(train_views[task.id], state.epoch)
            steps = min(steps_per_epoch, total_steps - state.epoch * steps_per_epoch)
            loss_sum = torch.zeros((), device=device)
            evaluating = 0.0
            for step, batch in enumerate(stream.epoch()):
                if step == steps:
                    break
                loss_sum += learner.learn_batch(batch)
                before, state.samples = state.samples, state.samples + len(batch.targets)
                if every and state.samples // every > before // every:
                    pause = time.perf_counter()
                    evaluate_anytime(task)
                    evaluating += time.perf_counter() - pause
                if progress:
                    bar.advance(bar_id)
            seconds = time.perf_counter() - start - evaluating
            state.train_seconds += seconds
            record = {"event": "epoch", "task": task.id, "epoch": state.epoch + 1,
                      "train_loss": float(loss_sum) / steps, "seconds": seconds}
            if not math.isfinite(record["train_loss"]):
                raise diverged(f"the loss of task {task.id + 1}, epoch {state.epoch + 1} is {record['train_loss']}")
            check_weights(f"task {task.id + 1}, epoch {state.epoch + 1}")
            if val_views[task.id] is not None:
                record["val_acc"] = evaluate(learner, val_views[task.id], cfg.train.eval_batch_size)
                bar.update(bar_id, info=f"val {record['val_acc']:.3f}")
            log(record)
            state.epoch += 1
            if cfg.checkpoint == "epoch" and state.epoch < epochs:
                checkpoint()
        start = time.perf_counter()
        last = task.id == len(tasks) - 1  # the end of the stream is told even when boundaries are hidden
        learner.finish_task(train_views[task.id], told=cfg.train.boundaries == "given" or last)
        state.train_seconds += time.perf_counter() - start
        check_weights(f"the end of task {task.id + 1}")
        # the method's diagnostics, before the checkpoint (a crash before it redoes the task's end)
        diagnostics.save_task(run_dir, task.id, method.diagnostics(train_views[task.id]), method.name)
        row = evaluate_all()
        state.acc_rows.append(row)
        record = {"event": "task", "task": task.id, "acc": row, **method.task_log()}
        if all(v is not None for v in val_views):  # what a sweep selects on (never the test rows)
            state.val_rows.append([evaluate(learner, v, cfg.train.eval_batch_size) for v in val_views])
            record["val_acc"] = state.val_rows[-1]
        if cfg.train.probe:
            state.probe_rows.append(probe_all())
            record["probe"] = state.probe_rows[-1]
        log(record)
        state.task, state.epoch = state.task + 1, 0
        checkpoint()

    state = checkpointer.restore(method)
    loggers = open_loggers(cfg.logger)
    loggers.start(run_dir, cfg.to_dict(), history=store.read_metrics(run_dir) if state is not None else [])
    results = None
    try:
        if state is None:
            store.truncate_metrics(run_dir, 0)
            diagnostics.clear(run_dir)  # an earlier attempt's files
            state = LoopState()
            state.random_init = evaluate_all()
            record = {"event": "random_init", "acc": state.random_init}
            if cfg.train.probe:
                state.probe_init = record["probe"] = probe_all()
            log(record)
        with _progress(progress) as bar:
            while state.task < len(tasks):
                train_task(tasks[state.task], bar)
        state.peak_rss_mb = max(state.peak_rss_mb, _rss_mb())
        results = make_results(cfg, benchmark, state, method)
        store.save_weights(run_dir, method.model)
        (run_dir / LOGGERS_PENDING).touch()  # removed once the loggers have the results
        store.write_json(run_dir / store.RESULTS_FILE, results)
    except BaseException:  # the loggers are closed cleanly when the run stops early; the run's error is the one shown
        with contextlib.suppress(Exception):
            loggers.finish(None, {})
        raise
    _hand_over(loggers, run_dir, results)
    return results


def finish_loggers(run_dir: Path, results: dict[str, Any]) -> None:
    """Give the loggers a finished run's results again when they failed to take them (a tracking server that was
    down as the run ended): the run is not trained again, and its MLflow run is completed."""
    if not (run_dir / LOGGERS_PENDING).exists():
        return
    cfg = store.read_config(run_dir)  # the loggers the run was made with (this command's may differ)
    loggers = open_loggers(cfg.logger)
    loggers.start(run_dir, cfg.to_dict(), history=store.read_metrics(run_dir))
    _hand_over(loggers, run_dir, results)


def _hand_over(loggers: Loggers, run_dir: Path, results: dict[str, Any]) -> None:
    """The finished run's results and files to the loggers; nothing is pending once they took them."""
    loggers.finish(results, store.run_files(run_dir))
    (run_dir / LOGGERS_PENDING).unlink(missing_ok=True)


def make_results(cfg: Config, benchmark: Benchmark, state: LoopState, method: Method) -> dict[str, Any]:
    """results.json: the keys DESIGN.md fixes, then random-init accuracies and method figures."""
    summary = metrics.summarize(state.acc_rows, state.random_init)
    results = {
        "acc_matrix": state.acc_rows,
        "acc": summary["acc"],
        "bwt": summary["bwt"],
        "fwt": summary["fwt"],
        "forgetting": summary["forgetting"],
        "max_forgetting": summary["max_forgetting"],
        "tasks": [t.classes for t in benchmark.tasks],
        "method": method.name,  # the method that ran (e.g. mas-slni for method mas with an slni section)
        "benchmark": cfg.data.benchmark,
        "scenario": benchmark.scenario,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "train_seconds": round(state.train_seconds, 3),
        "peak_rss_mb": round(state.peak_rss_mb, 1),
        "lifelong_version": __version__,
        "fingerprint": cfg.fingerprint(),  # of the config the results came from (checked when they are read)
        "avg_forgetting": summary["avg_forgetting"],
        "random_init_acc": state.random_init,
        "task_names": [t.name for t in benchmark.tasks],
        "method_info": method.report(),
    }
    if getattr(benchmark, "data_sha256", None):
        results["data_sha256"] = benchmark.data_sha256  # the user's files the run read
    if state.val_rows:
        results["val_acc_matrix"] = state.val_rows
    if cfg.train.probe:
        results["probe_matrix"], results["probe_random_init"] = state.probe_rows, state.probe_init
    if cfg.train.eval_every:
        points = [p["acc"] for p in state.anytime]
        results["anytime"] = {"samples": [p["samples"] for p in state.anytime], "acc": points,
                              "average": metrics.anytime_average(points)}
    return results


def run(config: Config | dict[str, Any] | None = None, sets: list[str] = (), progress: bool = False,
        force: bool = False, on_checkpoint: Callable[[LoopState], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the experiment a config describes; returns (run directory, results).

    The run directory is named after the config, so running the same config again returns the finished
    results (or continues an interrupted run) instead of training twice; ``force`` starts over. ``on_checkpoint``
    sees the loop's state after every checkpoint (a sweep's scheduler reads each task's validation row there).
    """
    cfg = config if isinstance(config, Config) else build_config(config, sets)
    _warn_ignored_model(cfg)
    run_dir = store.run_directory(cfg)
    with run_lock(run_dir):  # one trainer per run directory (lifelong/lock.py)
        return _run_locked(cfg, run_dir, progress, force, on_checkpoint)


def _run_locked(cfg: Config, run_dir: Path, progress: bool, force: bool,
                on_checkpoint: Callable[[LoopState], None] | None = None) -> tuple[Path, dict[str, Any]]:
    if force:
        for name in (store.RESULTS_FILE, store.CHECKPOINT_FILE, store.METRICS_FILE, store.WEIGHTS_FILE):
            (run_dir / name).unlink(missing_ok=True)
        store.remove_temp_files(run_dir)
    elif (run_dir / store.CONFIG_FILE).is_file():
        on_disk = store.read_config(run_dir)
        if on_disk.fingerprint() != cfg.fingerprint():
            raise UserError(f"'{run_dir / store.CONFIG_FILE}' was edited after the run was made "
                            f"({difference(cfg.to_dict(), on_disk.to_dict())}); restore it, or pass --force to "
                            "start this config over")
        finished = store.read_finished(run_dir, cfg)
        if finished is not None:
            finish_loggers(run_dir, finished)
            return run_dir, finished
    created = not run_dir.exists()
    try:
        return run_dir, execute(cfg, run_dir, progress, on_checkpoint,
                                on_start=lambda: store.write_config(run_dir, cfg))
    except BaseException:
        started = any((run_dir / name).exists() for name in (store.CHECKPOINT_FILE, store.METRICS_FILE))
        if created and run_dir.is_dir() and not started:
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that failed to start leaves nothing
        raise


def _warn_ignored_model(cfg: Config) -> None:
    """A method that builds its own network (mark) ignores the model section: say so rather than run silently."""
    own = METHODS[cfg.method].own_network
    if own and (cfg.model.name not in (own, ModelConfig.model_fields["name"].default) or cfg.model.options):
        warnings.warn(f"method {cfg.method} builds its own network ({own}) from its {cfg.method}.* settings; the "
                      "model section is ignored", UserWarning, stacklevel=3)


def resume(run_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint (or return its results if it finished)."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise UserError(f"resume needs a run directory's path, not {type(run_dir).__name__}")
    run_dir = Path(run_dir).resolve()  # its real name: the config hash it ends in, the lock beside it
    with run_lock(run_dir):  # one trainer per run directory (lifelong/lock.py)
        return _resume_locked(run_dir, progress)


def _resume_locked(run_dir: Path, progress: bool) -> dict[str, Any]:
    cfg = store.read_config(run_dir)
    finished = store.read_finished(run_dir, cfg)
    if finished is not None:
        finish_loggers(run_dir, finished)
        return finished
    if (run_dir / "serve").is_dir():  # a service started from a config: its versions are not a run's epochs
        raise UserError(f"'{run_dir}' is a service's directory, not an interrupted run; run the "
                        "`lifelong serve` command that started it again to continue it (docs/serve.md)")
    if not (run_dir / store.CHECKPOINT_FILE).exists():  # else the checkpoint's config tells what differs
        store.check_directory_name(run_dir, cfg)
    try:
        return execute(cfg, run_dir, progress)
    except UserError as err:  # resume takes no --data-dir: the data folder is the config's
        message = str(err).replace("pass --data-dir DIR", f"set data.data_dir in {run_dir / store.CONFIG_FILE}")
        if message == str(err):
            raise
        raise UserError(message) from None
