"""The service without HTTP: the served version, the journal, the learner thread, publishing and rollback.

Predictions read ``service.served`` (one immutable version, swapped by one assignment), so they never wait
for training; the learner thread owns its own learner and takes ``lock`` while it steps, publishes or rolls back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong import store
from lifelong.config import Config
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.learner import Learner, resolve_device
from lifelong.loop import finite_weights
from lifelong.serve.guard import Guard, Verdict
from lifelong.serve.inputs import BadInput, Shape
from lifelong.serve.journal import Journal
from lifelong.serve.labels import LabelSpace
from lifelong.serve.model import Models
from lifelong.serve.settings import ServeSettings
from lifelong.serve.trainer import Trainer
from lifelong.serve.versions import Versions


@dataclass(frozen=True)
class Served:
    """A published version: its number, its learner (never trained further) and its version.json."""

    version: int
    learner: Learner
    info: dict[str, Any]


class Service:
    """One serving directory: ``learn`` journals, the learner thread trains and publishes, ``predict`` answers."""

    def __init__(self, directory: Path, cfg: Config, settings: ServeSettings):
        self.directory, self.cfg, self.settings = directory, cfg, settings
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(cfg.seed)
        benchmark = build_benchmark(cfg.data, cfg.seed)
        self.models = Models(cfg, benchmark, resolve_device(cfg.device))
        method = self.models.fresh().method
        if method.trains_before_task or method.name == "joint":
            raise UserError(f"method {method.name} needs a whole task's data at once and cannot learn from samples "
                            "sent one request at a time; serve a run of another method")
        first = benchmark.tasks[0].train.images
        self.shape = Shape(tuple(first.shape[1:]), "uint8" if first.dtype == torch.uint8 else "float32",
                           settings.max_image_pixels)
        self.batch_size = settings.batch_size or cfg.train.batch_size
        root = directory / "serve"
        self.versions = Versions(root)
        self.journal = Journal(root / "journal.sqlite3", self.shape.shape, str(self.shape.dtype),
                               settings.guard.canary_every, settings.guard.canary_per_class)
        if self.versions.current() is None:
            self._first_version()
        current = self.versions.current()
        self.served = self._load(current["version"])
        self.trainer = Trainer(self.models.load(self.versions.state(current["version"])), self.models, self.journal)
        self.pos = int(current["resume_pos"])  # journal position of the last sample the trainer learnt
        recorded = current.get("journal")  # None: written before journals had ids
        # a new journal (the old one moved away): every sample in it is new to the learner, and versions without
        # an id were learnt from the old one
        self.journal_replaced = recorded != self.journal.id if recorded else self.pos > self.journal.last()
        pos = 0 if self.journal_replaced else min(self.pos, self.journal.last())  # (or restored from an older copy)
        if pos != self.pos or recorded != self.journal.id:
            self.pos = pos
            self.versions.set_current(current["version"], pos, self.journal.id)
        self.known = set(self.served.info["known"])  # canary classes the trainer has learnt
        self.space = LabelSpace(benchmark, self.trainer.reached())
        self.guard = Guard(self.journal, settings.guard, self.space.key)
        self.lock = threading.Lock()  # the trainer's: steps, publishing, rollback
        self.accept_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.since = 0  # samples learnt since the last candidate
        self.last_learnt = time.monotonic()
        self.learned_total = self.published_total = self.refused_total = 0
        self.last_loss: float | None = None
        self.last_refusal: dict[str, Any] | None = None
        self.error: str | None = None
        self.canary_report: dict[str, Any] = {}

    # --- versions ---
    def _first_version(self) -> None:
        """Version 0: the finished run's final state, or a fresh network for a config served from scratch."""
        learner, known, origin = self.models.fresh(), set(), "a fresh network (lifelong serve --config)"
        ckpt = store.load_checkpoint(self.directory) if store.read_results(self.directory) is not None else None
        if ckpt is not None:
            last = len(self.models.benchmark.tasks) - 1
            state = learner.state_dict()
            state.update(method=ckpt["method"], task=last, tasks_done=last, epoch=1, collected=[])
            learner.restore(state)
            known, origin = self.space_keys(last), f"the final state of the run in {self.directory}"
        info = {"parent": None, "journal_pos": 0, "journal": self.journal.id, "known": sorted(known),
                "created": time.time(), "origin": origin}
        self.versions.write(0, Models.dump(learner), learner.model, info)
        self.versions.set_current(0, 0, self.journal.id)

    def space_keys(self, upto: int) -> set[str]:
        return LabelSpace(self.models.benchmark, upto).all_keys(upto)

    def _load(self, number: int) -> Served:
        learner = self.models.load(self.versions.state(number), f"version {number}")
        learner.model.eval()
        return Served(number, learner, self.versions.info(number))

    # --- requests ---
    def predict(self, rows: np.ndarray, task: int | None) -> dict[str, Any]:
        served = self.served  # one read: this request sees one complete version
        task = self.space.predict_task(task, Models.reached(served.learner))
        probs = torch.softmax(self.models.scores(served.learner, torch.from_numpy(rows), task).float(), 1)
        if not bool(torch.isfinite(probs).all()):
            raise BadInput("the model's scores for these inputs are not finite numbers (values this large overflow "
                           "the network); send inputs on the scale of its training data")
        classes = probs.argmax(1).tolist()
        named = task if task is not None else max(Models.reached(served.learner), 0)
        return {"version": served.version, "classes": classes,
                "names": [self.space.name(named, c) for c in classes], "probabilities": probs.tolist()}

    def learn(self, rows: np.ndarray, labels: list[int], task: int | None) -> dict[str, Any]:
        if len(labels) != len(rows):
            raise BadInput(f"{len(rows)} samples but {len(labels)} labels; send one label per sample")
        with self.accept_lock:  # the latest task and the append agree
            tasks = self.space.learn_tasks(labels, task, self.journal.latest_task())
            positions = self.journal.append(tasks, labels, rows)
        self.wake.set()
        return {"accepted": len(positions), "first": positions[0], "last": positions[-1]}

    def rollback(self, number: int | None, relearn: bool) -> dict[str, Any]:
        """Serve an earlier version again; the learner continues from it (``relearn``: and learns the samples
        after it again; else they are skipped)."""
        with self.lock:
            published = self.versions.published()
            if number is None:
                earlier = [n for n in published if n < self.served.version]
                if not earlier:
                    raise BadInput(f"version {self.served.version} has no earlier version to roll back to", 409)
                number = earlier[-1]
            if number not in published:
                raise BadInput(f"version {number} does not exist; versions on disk: {published}", 404)
            served = self._load(number)
            skipped_from = self.pos
            self.trainer = Trainer(self.models.load(self.versions.state(number), f"version {number}"), self.models,
                                   self.journal)
            learnt = self._journal_pos(served.info)
            resume = learnt if relearn else max(self.pos, learnt)  # never learn a sample twice into one state
            self.versions.set_current(number, resume, self.journal.id)
            self.pos, self.known, self.since = resume, set(served.info["known"]), 0
            self.served = served
            self.error = None
        skipped = None if relearn or skipped_from <= learnt else [learnt + 1, skipped_from]
        return {"version": number, "relearn": relearn, "skipped": skipped}

    def _journal_pos(self, info: dict[str, Any]) -> int:
        """The journal position a version has learnt up to: 0 for one learnt from another journal."""
        recorded = info.get("journal")
        same = recorded == self.journal.id if recorded else not self.journal_replaced
        return int(info["journal_pos"]) if same else 0

    def status(self) -> dict[str, Any]:
        j = self.journal
        with self.lock:  # one consistent picture: not in the middle of a step or a publication
            served, pos = self.served, self.pos
            if self.canary_report.get("version") != served.version:
                self._report_canaries()
            published = self._journal_pos(served.info)
            samples = {"accepted": j.count(), "canary": j.count(canary=True),
                       "learned": j.count(upto=pos, canary=False), "published": j.count(upto=published, canary=False),
                       "queued": j.count(after=pos, canary=False), "since_candidate": self.since}
            report, task = dict(self.canary_report), self.trainer.reached()
        return {
            "version": served.version, "versions": self.versions.published(), "origin": served.info.get("origin"),
            "samples": samples, "positions": {"journal": j.last(), "learned": pos, "published": published},
            "task": task, "method": self.trainer.learner.method.name, "scenario": self.space.scenario,
            "canary_accuracy": report.get("accuracy", {}), "canary_counts": report.get("counts", {}),
            "last_verdict": report.get("verdict"), "last_refusal": self.last_refusal,
            "learner": self.learner_state(),
            "publish_every": self.settings.publish_every, "max_drop": self.settings.guard.max_drop,
        }

    # --- the learner thread ---
    def learner_state(self) -> str:
        """'learning', 'not started', or 'stopped: why'."""
        if self.error:
            return "stopped: " + self.error
        if self.thread is None:
            return "not started"
        if not self.thread.is_alive() and not self.stopping.is_set():
            return "stopped: the learner thread ended unexpectedly; the samples stay queued (restart to retry)"
        return "learning"

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="lifelong-learner", daemon=True)
        self.thread.start()

    def stop(self, publish: bool = True, timeout: float = 30.0) -> None:
        """Stop the learner thread; ``publish``: offer what it learnt since the last version to the guard first."""
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if publish and self.since and self.error is None:
            with self.lock:
                self._publish()
        self.journal.close()

    def _run(self) -> None:
        if self.settings.threads is not None:
            torch.set_num_threads(self.settings.threads)
        idle = self.settings.publish_idle_s
        while not self.stopping.is_set():
            try:
                with self.lock:
                    learnt = self.error is None and self._step()
                    if (not learnt and self.error is None and self.since and idle
                            and time.monotonic() - self.last_learnt >= idle):
                        self._publish()  # an idle publication fails like a step: recorded, never a dead thread
            except Exception as err:  # a bug or a diverged method: stop learning, keep serving, keep the queue
                self.error = f"{type(err).__name__}: {str(err)[:200]}; the samples stay queued (restart to retry)"
                learnt = False
            if not learnt:
                self.wake.wait(0.5 if not idle else min(0.5, idle))
                self.wake.clear()

    def _step(self) -> bool:
        """One mini-batch from the journal; returns whether there was one."""
        samples = self.journal.pending(self.pos, self.batch_size)
        if 0 < len(samples) < self.batch_size and self.settings.wait_ms:
            self.lock.release()  # let a rollback or /status in while the batch fills
            try:
                self.wake.clear()
                self.wake.wait(self.settings.wait_ms / 1000)
            finally:
                self.lock.acquire()
            samples = self.journal.pending(self.pos, self.batch_size)
        if not samples:
            return False
        if self.space.scenario == "task":  # one task per batch: each task has its own head
            samples = samples[: next((i for i, s in enumerate(samples) if s.task != samples[0].task), len(samples))]
        else:  # the samples before a later task's first one are learnt (and consolidated) with their own task
            limit = max(self.trainer.reached(), samples[0].task)
            samples = samples[: next((i for i, s in enumerate(samples) if s.task > limit), len(samples))]
        self.trainer.advance(max(s.task for s in samples), self.pos)
        self.last_loss = self.trainer.learn(samples, self.settings.steps_per_batch)
        self.pos = samples[-1].pos
        self.known |= {self.space.key(s.task, s.label) for s in samples}
        self.since += len(samples)
        self.learned_total += len(samples)
        self.last_learnt = time.monotonic()
        if self.since >= self.settings.publish_every:
            self._publish()
        return True

    def _predictor(self, learner: Learner):
        def predict(task: int, rows: torch.Tensor) -> torch.Tensor | None:
            if self.space.scenario == "task" and task > Models.reached(learner):
                return None
            return self.models.scores(learner, rows, task).argmax(1)
        return predict

    def _report_canaries(self, verdict: Verdict | None = None) -> None:
        if verdict is None:
            self.guard.refresh()
            accuracy, counts = self.guard.accuracy(self._predictor(self.served.learner))
        else:
            accuracy = verdict.candidate if verdict.publish else verdict.served
            counts = self.guard.counts()
        self.canary_report = {"version": self.served.version, "accuracy": accuracy, "counts": counts,
                              "verdict": None if verdict is None else verdict.reason}

    def _publish(self) -> None:
        """Offer the trainer's state as a candidate: publish it when finite and the guard agrees."""
        try:
            self._offer()
        finally:
            self.since = 0

    def _offer(self) -> None:
        candidate = self.models.copy(self.trainer.learner)
        candidate.model.eval()
        if not finite_weights(candidate.model):
            raise UserError("training diverged (the weights are not finite); the served version stays")
        served = self.served
        if self.settings.guard.enabled:
            verdict = self.guard.judge(self._predictor(served.learner), self._predictor(candidate),
                                       set(served.info["known"]))
        else:
            verdict = Verdict(True, "guard disabled")
        if not verdict.publish:
            self.refused_total += 1
            self.last_refusal = {"time": time.time(), "learned_position": self.pos, "served": served.version,
                                 "reason": verdict.reason}
            self._report_canaries(verdict)
            return
        state = Models.dump(candidate)
        number = max(self.versions.published()) + 1
        info = {"parent": served.version, "journal_pos": self.pos, "journal": self.journal.id,
                "known": sorted(self.known), "created": time.time(), "origin": "learnt from the journal",
                "guard": verdict.reason, "canary_accuracy": verdict.candidate}
        self.versions.write(number, state, candidate.model, info)
        self.versions.set_current(number, self.pos, self.journal.id)
        self.served = Served(number, candidate, {"version": number, **info})
        self.published_total += 1
        self._report_canaries(verdict)
        self.versions.prune(self.settings.keep_versions, number)
