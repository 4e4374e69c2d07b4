"""A real full disk: a run on a small tmpfs fails with one line naming the path, leaves no partial file, and
resumes to the end once there is room. Needs the right to mount (root); skipped elsewhere."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config


def mount_tmpfs(where: Path, size: str, remount: bool = False) -> bool:
    options = f"remount,size={size}" if remount else f"size={size}"
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
    return shutil.which("mount") is not None and subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    where = Path("/tmp") / f"lifelong-full-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    if os.geteuid() != 0 or not mount_tmpfs(where, "160k"):
        where.rmdir()
        pytest.skip("mounting a tmpfs needs root")
    yield where
    subprocess.run(["umount", str(where)], check=False)
    where.rmdir()


def lifelong_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(small_disk, tmp_path):
    config = tiny_config(small_disk / "runs", model={"name": "mlp", "hidden": [64]},
                         train={"epochs": 1, "batch_size": 64})
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    failed = lifelong_cli("run", "--config", str(tmp_path / "config.yml"))
    assert failed.returncode == 2, failed.stderr
    message = failed.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in failed.stderr
    assert "space" in message[0].lower() and str(small_disk) in message[0]
    run_dirs = list((small_disk / "runs").iterdir())
    assert len(run_dirs) == 1
    leftovers = [p.name for p in run_dirs[0].iterdir() if p.name.startswith(".")]
    assert leftovers == [] or all(name.endswith(".lock") for name in leftovers)

    assert mount_tmpfs(small_disk, "16m", remount=True)
    resumed = lifelong_cli("resume", str(run_dirs[0]))
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dirs[0] / "results.json").is_file() and (run_dirs[0] / "model.safetensors").is_file()
