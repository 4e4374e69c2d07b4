"""lifelong serve over real HTTP on 127.0.0.1: predict, learn, publish, rollback, the guard, tokens, bad input."""

import base64
import io
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

TOKEN = "a-test-token-of-32-characters-xx"


def quickstart_config(out, method="er", **sections):
    """Class-incremental quickstart with a small MLP: a service that learns in seconds."""
    cfg = {"method": method, "device": "cpu", "out": str(out),
           "data": {"benchmark": "quickstart", "scenario": "class", "validation": 0.0},
           "model": {"name": "mlp", "hidden": [100]}, "train": {"batch_size": 32}}
    cfg.update(sections)
    return cfg


FAST = {"publish_every": 64, "publish_idle_s": 0.3, "wait_ms": 20, "threads": 1}


def fashion():
    """The Fashion-MNIST subset shipped with the package: (train x, train y, test x, test y) as numpy arrays."""
    from lifelong.data.benchmarks import load_embedded_fashion_subset

    data = load_embedded_fashion_subset()
    return (data.train.images.numpy(), data.train.labels.numpy(), data.test.images.numpy(),
            data.test.labels.numpy())


def of_classes(x, y, classes, n=None):
    keep = np.isin(y, classes)
    return x[keep][:n], y[keep][:n]


class Server:
    """The real service (FastAPI on uvicorn) in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, out, config, token=TOKEN, run_dir=None, **settings):
        import uvicorn

        from lifelong.serve.app import bind, make_app
        from lifelong.serve.directory import open_directory
        from lifelong.serve.service import Service
        from lifelong.serve.settings import build_settings

        directory, cfg = open_directory(run_dir, config, str(out))
        self.service = Service(directory, cfg, build_settings({**FAST, **settings}))
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(make_app(self.service, token), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.service.start()
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.auth = {"Authorization": f"Bearer {token}"}

    def status(self):
        reply = self.client.get("/status", headers=self.auth)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def learn(self, x, y, **extra):
        reply = self.client.post("/learn", json={"inputs": x.tolist(), "labels": y.tolist(), **extra},
                                 headers=self.auth)
        assert reply.status_code == 202, reply.text
        return reply.json()

    def predict(self, x, **kwargs):
        reply = self.client.post("/predict", json={"inputs": x.tolist()}, **kwargs)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def settled(self, timeout=60.0):
        """Wait until every accepted sample is learnt and offered to the guard; returns the status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if not status["samples"]["queued"] and not status["samples"]["since_candidate"]:
                return status
            time.sleep(0.1)
        raise AssertionError(f"the service did not settle: {status}")

    def close(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.service.stop(publish=False)


@pytest.fixture(scope="module")
def data():
    return fashion()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve"), quickstart_config("runs"), max_request_bytes=2**21,
                    max_image_pixels=100 * 100)
    yield server
    server.close()


def accuracy(reply, y):
    return float(np.mean(np.array(reply["classes"]) == y))


def test_it_learns_publishes_a_version_and_rolls_back(server, data):
    x, y, xt, yt = data
    test_x, test_y = of_classes(xt, yt, [0, 1])
    before = server.predict(test_x)
    assert before["version"] == 0 and len(before["probabilities"][0]) == 2  # classes reached: those of task 0
    train_x, train_y = of_classes(x, y, [0, 1])
    replies = [server.learn(train_x[i:i + 150], train_y[i:i + 150]) for i in range(0, len(train_x), 150)]
    assert replies[0]["first"] == 1 and replies[-1]["last"] == len(train_x)
    status = server.settled()
    assert status["version"] >= 1 and status["samples"]["accepted"] == len(train_x)
    assert status["samples"]["canary"] == 60 and set(status["canary_accuracy"]) == {"0", "1"}
    after = server.predict(test_x)
    assert after["version"] == status["version"]
    assert accuracy(after, test_y) > max(0.9, accuracy(before, test_y) + 0.05)
    assert after["names"][int(np.argmax(test_y == 1))] == "Trouser"

    version = status["version"]
    rolled = server.client.post("/rollback", json={"version": 0}, headers=server.auth)
    assert rolled.status_code == 200 and rolled.json()["version"] == 0
    assert server.predict(test_x)["classes"] == before["classes"]
    assert server.status()["version"] == 0
    assert server.client.post("/rollback", headers=server.auth).status_code == 409  # nothing before version 0
    assert server.client.post("/rollback", json={"version": 999}, headers=server.auth).status_code == 404
    assert server.client.post("/rollback", json={"version": version}, headers=server.auth).status_code == 200
    assert server.predict(test_x)["classes"] == after["classes"]

    from lifelong.learner import Learner

    folder = server.service.versions.path(version)
    saved = Learner.load(folder / "checkpoint.pt")  # a version is a saved Learner, and safetensors weights
    assert saved.tasks_done == 0 and saved.task.id == 0
    metrics = server.client.get("/metrics").text
    assert f"lifelong_serve_version {float(version)}" in metrics
    assert 'lifelong_serve_requests_total{endpoint="/learn",status="202"}' in metrics


def test_images_arrays_and_shapes_give_the_same_answer(server, data):
    from PIL import Image

    _, _, xt, _ = data
    rows = xt[:3]
    as_arrays = server.predict(rows)
    assert server.predict(rows[:, 0])["classes"] == as_arrays["classes"]  # (H, W) for a grey model
    pngs = []
    for row in rows:
        buffer = io.BytesIO()
        Image.fromarray(row[0]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    encoded = [base64.b64encode(p).decode() for p in pngs]
    assert server.client.post("/predict", json={"images": encoded}).json()["classes"] == as_arrays["classes"]
    packed = base64.b64encode(np.ascontiguousarray(rows).tobytes()).decode()
    assert server.client.post("/predict", json={"raw": packed}).json()["classes"] == as_arrays["classes"]
    raw = server.client.post("/predict", content=pngs[0], headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json()["classes"] == as_arrays["classes"][:1]
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(rows[0, 0][:, :, None], 3, 2)).resize((56, 56)).save(buffer, format="JPEG")
    jpeg = server.client.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert jpeg.status_code == 200 and len(jpeg.json()["classes"]) == 1  # colour and size converted


def test_tokens_guard_learn_status_and_rollback(server, data):
    x, y, _, _ = data
    body = {"inputs": x[:1].tolist(), "labels": y[:1].tolist()}
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"}, {"Authorization": TOKEN}):
        reply = server.client.post("/learn", json=body, headers=headers)
        assert reply.status_code == 401 and "bearer token" in reply.json()["error"]
        assert reply.headers["www-authenticate"] == "Bearer"
        assert server.client.get("/status", headers=headers).status_code == 401
        assert server.client.post("/rollback", headers=headers).status_code == 401
    assert server.client.get("/healthz").json()["ok"] is True
    assert server.client.get("/metrics").status_code == 200
    assert server.client.post("/predict", json={"inputs": x[:1].tolist()}).status_code == 200  # open by default


def png(width, height):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width, height):
    """A PNG that only declares its size (no pixel data): what a decompression bomb starts with."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bad_requests(x):
    image = x[0, 0].tolist()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return [
        ("/predict", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ("/predict", {"json": {"inputs": [[[1, 2], [3, 4]]]}}, 422, "do not fit this model"),
        ("/predict", {"json": {"inputs": [[[0.5] * 28] * 28]}}, 422, "not decimals"),
        ("/predict", {"json": {"inputs": [[[300] * 28] * 28]}}, 422, "0..255"),
        ("/predict", {"json": {"inputs": [[["a"] * 28] * 28]}}, 422, "must hold numbers"),
        ("/predict", {"json": {"inputs": [image, image[:5]]}}, 422, "equally shaped"),
        ("/predict", {"json": {"inputs": []}}, 422, "no samples"),
        ("/predict", {"json": {"inputs": [image], "images": ["x"]}}, 422, "send one of"),
        ("/predict", {"json": {"raw": base64.b64encode(b"1" * 785).decode()}}, 422, "whole number of rows of 784"),
        ("/predict", {"json": {"raw": base64.b64encode(b"1" * 784 * 257).decode()}}, 413, "limit is 256"),
        ("/predict", {"json": {"input": [image]}}, 422, "Extra inputs"),
        ("/predict", {"json": {"inputs": [image], "task": 9}}, 422, "tasks 0..4"),
        ("/predict", {"json": {"inputs": [image], "task": -1}}, 422, "task"),
        ("/predict", {"json": {"images": ["%%%"]}}, 422, "not base64"),
        ("/predict", {"json": {"images": [base64.b64encode(b"GIF89a....").decode()]}}, 422, "PNG or JPEG"),
        ("/predict", {"content": png(200, 200), "headers": {"Content-Type": "image/png"}}, 413, "pixels"),
        ("/predict", {"content": png_header(100_000, 100_000), "headers": {"Content-Type": "image/png"}}, 413,
         "pixels"),  # beyond Pillow's own limit, which refuses the file as it opens it
        ("/predict", {"json": {"inputs": [image] * 257}}, 413, "limit is 256"),
        ("/predict", {"content": b"[" * 3_000_000, "headers": {"Content-Type": "application/json"}}, 413, "limit"),
        ("/predict", {"content": iter([b"[" * 2**20] * 3), "headers": {"Content-Type": "application/json"}}, 413,
         "larger than the limit"),  # chunked: no declared length
        ("/predict", {"content": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ("/learn", {"json": {"inputs": [image], "labels": [10]}, "headers": auth}, 422, "not a class"),
        ("/learn", {"json": {"inputs": [image], "labels": [1.5]}, "headers": auth}, 422, "labels"),
        ("/learn", {"json": {"inputs": [image], "labels": [True]}, "headers": auth}, 422, "labels"),
        ("/learn", {"json": {"inputs": [image], "labels": [0, 1]}, "headers": auth}, 422, "one label per sample"),
        ("/learn", {"json": {"inputs": [image], "labels": [3], "task": 0}, "headers": auth}, 422, "belongs to task 1"),
        ("/learn", {"content": png(28, 28), "headers": {**auth, "Content-Type": "image/png"}}, 422, "?label="),
        ("/learn", {"content": png(28, 28), "headers": {**auth, "Content-Type": "image/png"}, "params": {"label": "x"}},
         422, "integer"),
        ("/rollback", {"json": {"version": "latest"}, "headers": auth}, 422, "version"),
        ("/nowhere", {"json": {}}, 404, "Not Found"),
    ]


def test_bad_input_is_a_clear_4xx_never_a_500(server, data):
    x = data[0]
    accepted = server.status()["samples"]["accepted"]
    for path, kwargs, code, message in bad_requests(x):
        reply = server.client.post(path, **kwargs)
        assert reply.status_code == code and message in reply.json()["error"], (path, kwargs.get("json"), reply.text)
    assert server.client.get("/predict").status_code == 405
    assert server.status()["samples"]["accepted"] == accepted  # nothing refused was journaled


def test_the_guard_refuses_a_version_that_forgets_and_says_why(tmp_path, data):
    x, y, xt, yt = data
    server = Server(tmp_path, quickstart_config("runs", method="naive"), publish_every=10_000, max_batch=1000,
                    protect_predict=True)
    try:
        first_x, first_y = of_classes(x, y, [0, 1])
        server.learn(first_x, first_y)
        assert server.settled()["version"] == 1
        second_x, second_y = of_classes(x, y, [2, 3])
        server.learn(second_x, second_y)
        status = server.settled()
        assert status["version"] == 1 and status["task"] == 1  # learnt on, but not published
        assert "beyond the allowed drop 0.1" in status["last_refusal"]["reason"]
        assert min(status["canary_accuracy"][c] for c in ("0", "1")) > 0.8  # what is served still knows them
        assert server.client.post("/predict", json={"inputs": xt[:1].tolist()}).status_code == 401
        assert server.predict(xt[:1], headers=server.auth)["version"] == 1
        assert "lifelong_serve_candidates_refused_total 1.0" in server.client.get("/metrics").text
    finally:
        server.close()


def test_a_finished_run_is_served_as_it_ended_and_keeps_learning(tmp_path, data):
    import lifelong

    x, y, xt, yt = data
    config = quickstart_config(tmp_path / "runs", data={"benchmark": "quickstart", "scenario": "class",
                                                        "validation": 0.0, "max_tasks": 2, "train_fraction": 0.3},
                               train={"epochs": 1, "batch_size": 32}, memory={"size": 200})
    run_dir, results = lifelong.run(config)
    server = Server(tmp_path, None, run_dir=run_dir)
    try:
        status = server.status()
        assert status["version"] == 0 and "final state of the run" in status["origin"] and status["task"] == 1
        for task, classes in enumerate(([0, 1], [2, 3])):  # the run's own test accuracy, through HTTP
            test_x, test_y = of_classes(xt, yt, classes)
            assert accuracy(server.predict(test_x), test_y) == pytest.approx(results["acc_matrix"][-1][task])
        server.learn(*of_classes(x, y, [0, 1, 2, 3], 200))
        status = server.settled()
        assert status["version"] >= 1 or status["last_refusal"] is not None
        assert (run_dir / "serve" / "versions" / "v000000" / "model.safetensors").is_file()
    finally:
        server.close()


def test_task_incremental_needs_the_task_and_never_goes_back(tmp_path, data):
    x, y, _, _ = data
    server = Server(tmp_path, quickstart_config("runs", data={"benchmark": "quickstart", "scenario": "task",
                                                              "validation": 0.0}))
    try:
        image = x[:1].tolist()
        assert "pass 'task'" in server.client.post("/predict", json={"inputs": image}).json()["error"]
        server.learn(x[:2], np.array([0, 1]), task=1)
        reply = server.client.post("/learn", json={"inputs": image, "labels": [0], "task": 0}, headers=server.auth)
        assert reply.status_code == 409 and "cannot go back" in reply.json()["error"]
        assert server.client.post("/learn", json={"inputs": image, "labels": [2], "task": 1},
                                  headers=server.auth).status_code == 422
        assert server.settled()["task"] == 1
    finally:
        server.close()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from lifelong.cli import main

    assert main(["serve"]) == 2
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.yml")]) == 2
    (tmp_path / "c.yml").write_text("method: naive\nserve: {publish_every: 0}\n")
    assert main(["serve", "--config", str(tmp_path / "c.yml")]) == 2
    assert "invalid serve setting 'publish_every'" in capsys.readouterr().err
    (tmp_path / "c.yml").write_text("method: naive\n")
    assert main(["serve", "--config", str(tmp_path / "c.yml"), "--set", "nope=1"]) == 2
    assert "unknown serve setting 'nope'" in capsys.readouterr().err


def test_feature_values_beyond_float32_are_refused():
    """A value that float32 cannot hold would be stored as infinity: refused like NaN, before the journal."""
    from lifelong.serve.inputs import BadInput, Shape

    shape = Shape((3, 1, 1), "float32", 100)
    assert shape.arrays([[1.0, -2.0, 3e38]]).dtype == np.float32
    for value in (1e300, -1e39, float("nan")):
        with pytest.raises(BadInput, match="finite float32"):
            shape.arrays([[1.0, value, 0.0]])


def test_a_failed_idle_publication_stops_the_learner_visibly(tmp_path, data, monkeypatch):
    """Whatever fails in the learner thread (here: publishing when idle) is reported by /status and /healthz;
    the thread never dies silently."""
    x, y, _, _ = data
    server = Server(tmp_path, quickstart_config("runs", method="naive"), publish_every=10_000)
    try:
        def broken():
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(server.service, "_offer", broken)
        server.learn(*of_classes(x, y, [0, 1], 40))
        deadline = time.monotonic() + 30
        while "stopped" not in server.status()["learner"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.status()["learner"].startswith("stopped: RuntimeError: disk on fire")
        assert server.client.get("/healthz").json()["learner"] == "stopped"
        assert server.service.thread.is_alive()
    finally:
        server.close()


@pytest.mark.parametrize("classes", [[0, 1, 2, 3], [4, 5]])
def test_a_stream_that_mixes_or_skips_tasks_keeps_learning(tmp_path, data, classes):
    """Class-incremental: a first batch holding two tasks' classes learns the first task's samples before moving
    on (MAS consolidates on them); samples of a later task first end the skipped tasks with nothing to consolidate.
    Either way the learner keeps learning, also after a restart."""
    x, y, _, _ = data
    config = quickstart_config("runs", method="mas")
    server = Server(tmp_path, config)
    try:
        picked_x, picked_y = of_classes(x, y, classes, 120)
        order = np.random.default_rng(0).permutation(len(picked_y))
        server.learn(picked_x[order], picked_y[order])
        status = server.settled()
        assert status["learner"] == "learning" and status["task"] == max(classes) // 2
        assert status["positions"]["learned"] == status["positions"]["journal"]
    finally:
        server.close()
    again = Server(tmp_path, config)
    try:
        assert again.settled()["learner"] == "learning"
    finally:
        again.close()


def test_a_new_journal_is_learnt_from_its_start(tmp_path, data):
    """The journal moved away (as its error message advises): the next start learns every sample of the new
    one, rather than skipping as many as the old one had."""
    x, y, _, _ = data
    config = quickstart_config("runs", method="naive")
    server = Server(tmp_path, config)
    try:
        server.learn(*of_classes(x, y, [0, 1], 100))
        assert server.settled()["positions"]["learned"] > 50
        journal = server.service.journal.path
    finally:
        server.close()
    for suffix in ("", "-wal", "-shm"):
        old = journal.with_name(journal.name + suffix)
        if old.exists():
            old.rename(old.with_name(old.name + ".old"))
    server = Server(tmp_path, config)
    try:
        assert server.status()["positions"]["learned"] == 0
        server.learn(*of_classes(x, y, [0, 1], 30))
        status = server.settled()
        assert status["positions"]["learned"] == status["positions"]["journal"]
        assert status["samples"]["learned"] == status["samples"]["accepted"] - status["samples"]["canary"]
    finally:
        server.close()


def test_rolling_forward_without_relearning_never_learns_a_sample_twice(tmp_path, data):
    """Back to version 0 with relearn, then to the newest version before the learner caught up: the learner
    continues after what that version learnt, and reports nothing skipped."""
    x, y, _, _ = data
    server = Server(tmp_path, quickstart_config("runs", method="naive"), publish_every=32)
    try:
        server.learn(*of_classes(x, y, [0, 1], 100))
        server.settled()
        service = server.service
        newest = max(service.versions.published())
        learnt = int(service.versions.info(newest)["journal_pos"])
        service.stop(publish=False)  # the learner must not catch up between the two rollbacks
        service.journal = type(service.journal)(service.journal.path, service.journal.shape,
                                                str(service.journal.dtype), 10, 10)
        assert service.rollback(0, relearn=True)["skipped"] is None and service.pos == 0
        reply = service.rollback(newest, relearn=False)
        assert reply["skipped"] is None and service.pos == learnt
        assert service.versions.current()["resume_pos"] == learnt
    finally:
        server.client.close()
        server.server.should_exit = True
        server.thread.join(10)
        server.service.journal.close()
