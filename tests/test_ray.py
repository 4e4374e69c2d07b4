"""--executor ray on a local Ray cluster of two nodes on 127.0.0.1 (one CPU each): a worker killed during a run,
and the comparison still equals a sequential one. Skipped without Ray (pip install 'lifelong[ray]')."""

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from lifelong import compare, store
from lifelong.cli import main

from test_executors import experiment, kill_during

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install 'lifelong[ray]')", allow_module_level=True)

RAY = str(Path(sys.executable).parent / "ray")
STARTED = "Ray runtime started"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group (stopped as one group), waiting until it is up."""
    with open(log, "w") as out:
        proc = subprocess.Popen([RAY, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                 "--disable-usage-stats", "--block"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    deadline = time.time() + 90
    while STARTED not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            pytest.fail(f"ray start failed: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL the node's process group (a test cluster has nothing to drain), then reap its leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


@pytest.fixture
def cluster():
    """A head and a worker node on 127.0.0.1 with a token of their own; yields the head's address and the
    environment that reaches it."""
    if shutil.which(RAY) is None:
        pytest.skip("the ray command is not installed")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    address = f"127.0.0.1:{_free_port()}"
    nodes = [_start(["--head", "--port", address.split(":")[1], "--include-dashboard", "false", "--temp-dir",
                     str(temp)], temp / "head.log", env)]
    try:
        nodes.append(_start(["--address", address], temp / "worker.log", env))
        yield address, env
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_killed_ray_worker_is_retried_and_the_comparison_equals_a_sequential_one(tiny, tmp_path, cluster):
    address, env = cluster
    sequential = compare.run_experiment(experiment(tiny, tmp_path / "seq"))
    exp = experiment(tiny, tmp_path / "ray")
    path = tmp_path / "experiment.yml"
    path.write_text(yaml.safe_dump(exp.model_dump()))
    slow_dir = store.run_directory(compare.build_config(compare.plan(exp)[1]["config"]))
    # the driver in its own process: Ray reads its token settings once per process
    driver = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "compare", "--config", str(path), "--executor",
                               "ray", "--address", address], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    done = threading.Event()
    threading.Thread(target=lambda: (driver.wait(), done.set()), daemon=True).start()
    try:
        before_kill = kill_during(slow_dir, done)
        output = driver.communicate(timeout=240)[0]
    except AssertionError:
        driver.kill()
        raise AssertionError(driver.communicate()[0][-3000:]) from None
    finally:
        driver.kill()
    assert driver.returncode == 2 and "1 of 3 runs failed" in output  # the diverging run, not retried
    for entry in sequential:
        run_dir = store.run_directory(compare.build_config({**entry["config"], "out": str(tmp_path / "ray")}))
        results = store.read_results(run_dir)
        assert (results is None) == (entry["results"] is None)
        if results:
            assert results["acc_matrix"] == entry["results"]["acc_matrix"]
    assert (slow_dir / store.METRICS_FILE).read_text().splitlines()[: len(before_kill)] == before_kill  # resumed
    summary = next((tmp_path / "ray").glob("compare-*/summary.md")).read_text()
    assert "| diverges | 0 |" in summary and "training diverged" in summary


def test_an_unreachable_cluster_is_a_user_error(capsys):
    code = main(["compare", "--methods", "naive", "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"])
    assert code == 2 and "cannot reach the Ray cluster" in capsys.readouterr().err
