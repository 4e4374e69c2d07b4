"""The run lock: one trainer per run directory across processes; stale locks of killed owners are taken over."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lifelong import store
from lifelong.config import build_config
from lifelong.lock import RunLocked, is_held, lock_path, owner, run_lock

HOLD = """
import sys, time
from lifelong.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""

TRAIN = """
import json, sys
import lifelong
from lifelong.lock import run_lock
from lifelong import store
cfg = lifelong.build_config(json.loads(sys.argv[1]))
with run_lock(store.run_directory(cfg), wait=True):
    run_dir, results = lifelong.run(cfg)
print(json.dumps(results["acc"]), flush=True)
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_and_takes_over_the_stale_lock_of_a_killed_owner(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    assert not is_held(run_dir)
    proc = _holder(run_dir)
    try:
        assert owner(run_dir)["pid"] == proc.pid and is_held(run_dir)
        with pytest.raises(RunLocked, match=f"pid {proc.pid} on host"):
            with run_lock(run_dir):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert lock_path(run_dir).exists() and not is_held(run_dir)  # a killed owner leaves its file: a stale lock
    with run_lock(run_dir) as stale:
        assert stale["pid"] == proc.pid and owner(run_dir)["pid"] == os.getpid()
    assert not lock_path(run_dir).exists()


def test_the_lock_is_reentrant_in_its_thread_and_exclusive_across_threads(tmp_path):
    run_dir = tmp_path / "r"
    seen = []
    with run_lock(run_dir):
        with run_lock(run_dir):
            pass
        assert lock_path(run_dir).exists()  # the inner block did not release it

        def other():
            try:
                with run_lock(run_dir):
                    seen.append("got it")
            except RunLocked:
                seen.append("refused")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == ["refused"]



def test_every_path_to_a_run_directory_takes_the_same_lock(tmp_path, monkeypatch):
    """A symlink, `.` or a relative path reaching the directory is the same run: one lock file, refused alike."""
    run_dir = tmp_path / "runs" / "r-0123abcd"
    run_dir.mkdir(parents=True)
    (tmp_path / "link").symlink_to(run_dir)
    monkeypatch.chdir(run_dir)
    paths = [run_dir, tmp_path / "link", Path("."), Path("../r-0123abcd")]
    assert {lock_path(p) for p in paths} == {run_dir.parent / ".r-0123abcd.lock"}
    proc = _holder(run_dir)
    try:
        for path in paths[1:]:
            with pytest.raises(RunLocked), run_lock(path):
                pass
    finally:
        proc.kill()
        proc.wait()

def test_a_waiting_worker_gets_the_lock_when_it_is_released(tmp_path):
    run_dir = tmp_path / "r"
    proc = _holder(run_dir)
    threading.Timer(0.5, proc.terminate).start()  # SIGTERM: the holder dies; the system releases its lock
    start = time.perf_counter()
    with run_lock(run_dir, wait=True, poll=0.05):
        assert time.perf_counter() - start >= 0.4
    proc.wait(10)


def test_a_lock_that_cannot_start_leaves_no_folder(tmp_path):
    with run_lock(tmp_path / "a" / "b" / "run"):
        assert (tmp_path / "a" / "b").is_dir()
    assert not (tmp_path / "a").exists()


def test_two_processes_training_one_config_train_it_once(tiny):
    raw = tiny(train={"epochs": 1})
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN, json.dumps(raw)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]
    run_dir = store.run_directory(build_config(raw))
    events = [r["event"] for r in store.read_metrics(run_dir)]
    assert events.count("random_init") == 1 and events.count("task") == 3  # trained once, then reused
    assert not lock_path(run_dir).exists()
