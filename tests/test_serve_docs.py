"""docs/serve.md: its curl examples run against a real server, and every serve setting is documented."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from test_serve import TOKEN, Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serve.md"


def test_every_serve_setting_is_documented():
    from lifelong.serve.settings import GuardSettings, ServeSettings

    text = DOC.read_text()
    keys = [k for k in ServeSettings.model_fields if k != "guard"] + [f"guard.{k}" for k in GuardSettings.model_fields]
    assert not [k for k in keys if f"`{k}`" not in text]


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_the_curl_examples_of_docs_serve_work(tmp_path):
    from lifelong.config import read_yaml

    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) >= 5
    config = {**read_yaml(ROOT / "configs" / "serve.yml"), "device": "cpu"}
    server = Server(tmp_path / "runs", config, publish_every=200, wait_ms=200, publish_idle_s=0.5)  # as documented
    try:
        script = "set -euo pipefail\n" + "\n".join(blocks).replace("http://127.0.0.1:8000", server.url)
        env = {**os.environ, "LIFELONG_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        server.close()
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    replies = [line for line in out.splitlines() if line.startswith("{")]
    assert '"version":0' in replies[0] and '"accepted":250,"first":1,"last":250' in replies[1]
    assert '"accepted":1,"first":251' in replies[2]
    after = next(r for r in replies if '"names"' in r and '"version":0' not in r)
    assert '"names":["Trouser"]' in after  # learnt from the 250 samples
    assert "lifelong_serve_version " in out and '"skipped":[1,' in out  # up to what was learnt by then
    assert replies[-1] == replies[0]  # rolled back: version 0 answers as before
    assert out.rstrip().endswith("401")
