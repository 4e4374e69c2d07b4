"""Downloads against a local HTTP server: verification, atomic writes, mirrors, errors and safe tar extraction."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lifelong.data import sources
from lifelong.data.download import extract_tar, fetch
from lifelong.data.sources import Download, download_dataset, load_dataset
from lifelong.errors import UserError

from fakedata import set_checksums

MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging; any path under /truncated/ announces more bytes than it sends."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/truncated/"):
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"only ten b")


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real ~/.cache, $LIFELONG_DATA, system folders and proxies."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", ())
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on a free port serving tmp_path/www; yields (base URL, served folder)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve_mnist(folder: Path) -> dict[str, tuple[str, str]]:
    """Put four small MNIST .gz files in `folder`; return the checksum table that matches them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for stem in MNIST_STEMS:
        shape = (3, 28, 28) if "images" in stem else (3,)
        values = rng.integers(0, 10, shape, dtype=np.uint8)
        content = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + values.tobytes()
        (folder / f"{stem}.gz").write_bytes(gzip.compress(content))
        table[stem] = ("sha256", hashlib.sha256(content).hexdigest())
    return table


def cifar10_tarball(path: Path) -> dict[str, tuple[str, str]]:
    """Write a tiny cifar-10-python.tar.gz; return the checksum table for it and its files."""
    rng = np.random.default_rng(1)
    files = {f"data_batch_{i}": {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [i % 10, 3]}
             for i in range(1, 6)}
    files["test_batch"] = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [9, 0]}
    files["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    table = {}
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = pickle.dumps(content, protocol=2)
            add_bytes(tar, f"cifar-10-batches-py/{name}", data)
            table[name] = ("md5", hashlib.md5(data).hexdigest())
    table[path.name] = ("md5", hashlib.md5(path.read_bytes()).hexdigest())
    return table


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file with content `data` to an open tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def listing(folder: Path) -> list[str]:
    """Every path under `folder`, relative, hidden ones included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_download_mnist_verifies_and_loads(tmp_path: Path, server: tuple[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, www = server
    set_checksums(monkeypatch, "mnist", serve_mnist(www / "mnist"))
    folder = download_dataset("mnist", tmp_path / "data", base_url=base_url, progress=False)
    assert folder == tmp_path / "data" / "mnist"
    assert listing(folder) == sorted(f"{stem}.gz" for stem in MNIST_STEMS)
    served = www / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == served.read_bytes()
    assert load_dataset("mnist", tmp_path / "data").train.images.shape == (3, 1, 28, 28)


def test_verified_files_are_not_downloaded_again(tmp_path: Path, server: tuple[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, www = server
    set_checksums(monkeypatch, "mnist", serve_mnist(www / "mnist"))
    download_dataset("mnist", tmp_path, base_url=base_url, progress=False)
    assert download_dataset("mnist", tmp_path, base_url="http://127.0.0.1:9", progress=False) == tmp_path / "mnist"


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, server: tuple[str, Path]) -> None:
    base_url, www = server
    serve_mnist(www / "mnist")  # the real checksums cannot match these files
    with pytest.raises(UserError, match="could not download train-images-idx3-ubyte.gz.*checksum mismatch") as error:
        download_dataset("mnist", tmp_path / "data", base_url=base_url, progress=False)
    assert "\n" not in str(error.value)
    assert listing(tmp_path / "data") in ([], ["mnist"])  # no final file and no temporary file left behind


def test_server_404(tmp_path: Path, server: tuple[str, Path]) -> None:
    base_url, _ = server
    with pytest.raises(UserError, match="could not download train_32x32.mat.*404") as error:
        download_dataset("svhn", tmp_path, base_url=base_url, progress=False)
    assert "\n" not in str(error.value)
    assert listing(tmp_path / "svhn") == []


def test_unreachable_host(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="could not download train_32x32.mat"):
        download_dataset("svhn", tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_second_mirror_is_used_when_first_fails(tmp_path: Path, server: tuple[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, www = server
    assert sources.DATASETS["mnist"].download.mirrors[1] == "http://yann.lecun.com/exdb/mnist/"
    set_checksums(monkeypatch, "mnist", serve_mnist(www / "exdb" / "mnist"))  # only the second mirror
    folder = download_dataset("mnist", tmp_path, base_url=base_url, progress=False)
    assert len(listing(folder)) == 4


def test_truncated_response_leaves_no_file(tmp_path: Path, server: tuple[str, Path]) -> None:
    base_url, _ = server
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(UserError, match="could not download file.bin"):
        fetch([f"{base_url}/truncated/file.bin"], dest, verify=lambda path: None, progress=False)
    assert listing(tmp_path / "out") == []


def test_cifar_archive_download_with_progress(tmp_path: Path, server: tuple[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, www = server
    (www / "~kriz").mkdir()
    set_checksums(monkeypatch, "cifar10", cifar10_tarball(www / "~kriz" / "cifar-10-python.tar.gz"))
    folder = download_dataset("cifar10", tmp_path / "data", base_url=base_url, progress=True)
    assert folder == tmp_path / "data" / "cifar-10-batches-py"
    assert listing(tmp_path / "data") == ["cifar-10-batches-py"] + [f"cifar-10-batches-py/{name}" for name in sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])]
    splits = load_dataset("cifar10", tmp_path / "data")
    assert splits.train.labels.tolist() == [1, 3, 2, 3, 3, 3, 4, 3, 5, 3] and splits.class_names[9] == "c9"


def test_load_dataset_downloads_into_first_writable_root(tmp_path: Path, server: tuple[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, www = server
    set_checksums(monkeypatch, "mnist", serve_mnist(www / "mnist"))
    mnist = sources.DATASETS["mnist"]
    monkeypatch.setitem(sources.DATASETS, "mnist", replace(mnist, download=Download((f"{base_url}/mnist/",),
                                                                             mnist.download.files)))
    (tmp_path / "a-file").write_text("a data dir cannot be created under a file")
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "env"))
    splits = load_dataset("mnist", tmp_path / "a-file" / "data", download=True, progress=False)
    assert len(splits.test) == 3 and (tmp_path / "env" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.parametrize("name, hint", [
    ("notmnist", "notMNIST_small"),
    ("mini-imagenet", "mini-imagenet-cache-train.pkl"),
])
def test_datasets_without_official_download(tmp_path: Path, name: str, hint: str) -> None:
    with pytest.raises(UserError, match=hint) as error:
        download_dataset(name, tmp_path)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt"])
def test_extract_tar_refuses_path_traversal(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, member, b"gotcha")
    (tmp_path / "dest").mkdir()
    with pytest.raises(UserError, match="refusing to extract"):
        extract_tar(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists() and listing(tmp_path / "dest") == []


def test_extract_tar_refuses_links(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("data/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="refusing to extract 'data/passwd'"):
        extract_tar(archive, tmp_path / "dest")


def test_extract_tar_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cut.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "x/big", np.random.default_rng(0).bytes(100_000))
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt archive .*cut.tar.gz"):
        extract_tar(archive, tmp_path / "dest")
