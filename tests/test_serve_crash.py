"""Crash safety: SIGKILL `lifelong serve` while it learns; on restart no sample that got a 202 is lost."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from test_serve import TOKEN, fashion, quickstart_config  # noqa: E402


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(config_path, env):
    return subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", "--config", str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(client, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read()}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start")


def test_sigkill_while_learning_loses_no_accepted_sample(tmp_path):
    x, y, _, _ = fashion()
    keep = np.isin(y, [0, 1, 2, 3, 4, 5])
    x, y = x[keep], y[keep]
    port = free_port()
    config = quickstart_config(tmp_path / "runs", serve={"port": port, "publish_every": 32, "publish_idle_s": 0.2,
                                                         "wait_ms": 5, "batch_size": 16, "steps_per_batch": 5})
    path = tmp_path / "serve.yml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LIFELONG_SERVE_TOKEN": TOKEN}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    sent = {}  # journal position → label, for every sample that got a 202

    def learn(start, stop):
        reply = client.post("/learn", json={"inputs": x[start:stop].tolist(), "labels": y[start:stop].tolist()},
                            headers=auth)
        assert reply.status_code == 202, reply.text
        body = reply.json()
        sent.update(zip(range(body["first"], body["last"] + 1), y[start:stop].tolist()))

    process = start(path, env)
    try:
        wait_healthy(client, process)
        for i in range(0, 400, 40):
            learn(i, i + 40)
        deadline = time.monotonic() + 30
        while client.get("/status", headers=auth).json()["version"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        learn(400, 600)  # a queue the learner is busy with when the kill comes
        learn(600, 800)
        status = client.get("/status", headers=auth).json()
        assert status["version"] >= 2 and status["samples"]["queued"] > 0, status
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        process = start(path, env)
        wait_healthy(client, process)
        status = client.get("/status", headers=auth).json()
        assert status["samples"]["accepted"] == len(sent)
        assert status["samples"]["learned"] + status["samples"]["queued"] + status["samples"]["canary"] == len(sent)
        served = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
        folder = served / "serve" / "versions" / f"v{status['version']:06d}"
        from safetensors.torch import load_file

        from lifelong.learner import Learner

        assert Learner.load(folder / "checkpoint.pt").model is not None and load_file(folder / "model.safetensors")
        learn(800, 840)  # and it goes on learning
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get("/status", headers=auth).json()
            if status["samples"]["queued"] == 0 and status["positions"]["published"] == status["positions"]["learned"]:
                break
            time.sleep(0.1)
        assert status["samples"]["queued"] == 0 and status["samples"]["published"] + status["samples"]["canary"] == \
            len(sent), status
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.close()
    with sqlite3.connect(served / "serve" / "journal.sqlite3") as db:
        journaled = dict(db.execute("SELECT pos, label FROM samples"))
    assert journaled == sent  # every accepted sample, with its label, and nothing else
