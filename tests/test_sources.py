"""Dataset readers, checksum verification and data-directory resolution, on small files in the official formats."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lifelong.data import sources
from lifelong.data.readers import (read_cifar, read_idx, read_image_folder, read_mini_imagenet, read_notmnist,
                                   read_svhn)
from lifelong.data.sources import DATASETS, candidate_roots, load_dataset
from lifelong.errors import UserError

from fakedata import (idx_bytes, md5_table, set_checksums, sha256_table, write_cifar, write_mini_imagenet,
                      write_mnist, write_notmnist, write_svhn)


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real ~/.cache, $LIFELONG_DATA and system dataset folders."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", ())


class RunsShell:
    """A pickle payload that would run a shell command when unpickled by a plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------------------------------------------
# IDX and MNIST


def test_dataset_names() -> None:
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "notmnist", "mini-imagenet"}
    assert all(isinstance(text, str) and "\n" not in text for text in (d.description for d in DATASETS.values()))


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(idx_bytes(images)) if gz else idx_bytes(images))
    tensor = read_idx(path)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 4, 5)
    assert tensor[2, 3, 4].item() == images[2, 3, 4] == 59


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    values = np.array([[-7, 1 << 20], [3, 0]], dtype=">i4")
    (tmp_path / "ints").write_bytes(idx_bytes(values))
    tensor = read_idx(tmp_path / "ints")
    assert tensor.dtype == torch.int32 and tensor.tolist() == [[-7, 1 << 20], [3, 0]]
    floats = np.array([1.5, -2.25], dtype=">f4")
    (tmp_path / "floats").write_bytes(idx_bytes(floats))
    assert read_idx(tmp_path / "floats").tolist() == [1.5, -2.25]


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"\x01" + data[1:], "magic"),
    (lambda data: data[:2] + b"\x07" + data[3:], "dtype code"),
    (lambda data: data[:-1], "does not match"),
    (lambda data: data + b"\x00", "does not match"),
    (lambda data: data[:6], "header"),
])
def test_read_idx_rejects_malformed(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))))
    with pytest.raises(UserError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    path.write_bytes(gzip.compress(idx_bytes(images))[:1000])
    with pytest.raises(UserError, match="corrupt data file .*train-images-idx3-ubyte.gz.*download it again"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "mnist", 7, 3, gz=gz)
    set_checksums(monkeypatch, "mnist", sha256_table(arrays))
    for data_dir in (tmp_path, tmp_path / "mnist"):  # a root, or the dataset folder itself
        splits = load_dataset("mnist", data_dir)
        assert splits.name == "mnist" and splits.class_names == [str(d) for d in range(10)]
        assert splits.train.images.shape == (7, 1, 28, 28) and splits.test.images.shape == (3, 1, 28, 28)
        assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
        assert splits.train.images[5, 0, 13, 21].item() == arrays["train-images-idx3-ubyte"][5, 13, 21]
        assert splits.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_load_fashion_mnist_class_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp_path / "fashion-mnist", 2, 2)
    set_checksums(monkeypatch, "fashion-mnist", sha256_table(arrays))
    splits = load_dataset("fashion-mnist", tmp_path)
    assert splits.name == "fashion-mnist" and splits.class_names[0] == "T-shirt/top" and len(splits.class_names) == 10


def test_checksum_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", 2, 2)  # the real checksums cannot match generated files
    with pytest.raises(UserError, match="checksum mismatch for .*train-images-idx3-ubyte.gz.*download it again"):
        load_dataset("mnist", tmp_path)


def test_missing_file_in_found_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp_path / "mnist", 2, 2)
    set_checksums(monkeypatch, "mnist", sha256_table(arrays))
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_not_found_message_names_file_places_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        load_dataset("mnist", tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message and "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "nowhere" / "mnist") in message and str(tmp_path / "home" / ".cache" / "lifelong") in message
    assert "lifelong download mnist" in message and "--data-dir" in message


def test_unknown_dataset() -> None:
    with pytest.raises(UserError, match="unknown dataset 'imagenet'.*mnist"):
        load_dataset("imagenet")


def test_candidate_roots_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", (tmp_path / "system",))
    expected = [tmp_path / "explicit", tmp_path / "env", tmp_path / "home" / ".cache" / "lifelong", tmp_path / "system"]
    assert candidate_roots(tmp_path / "explicit") == expected
    assert candidate_roots(str(tmp_path / "explicit")) == expected
    assert candidate_roots(None) == expected[1:]


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = {"explicit": tmp_path / "explicit", "env": tmp_path / "env",
             "cache": tmp_path / "home" / ".cache" / "lifelong", "system": tmp_path / "system"}
    for n_train, root in enumerate(roots.values(), start=1):  # each root's copy is told apart by its size
        write_mnist(root / "mnist", n_train, 1)
    set_checksums(monkeypatch, "mnist", {})
    monkeypatch.setenv("LIFELONG_DATA", str(roots["env"]))
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", (roots["system"],))

    def size(data_dir: Path | None) -> int:
        return len(load_dataset("mnist", data_dir).train)

    assert size(roots["explicit"]) == 1
    assert size(None) == size(tmp_path / "empty") == 2
    monkeypatch.delenv("LIFELONG_DATA")
    assert size(None) == 3
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    assert size(None) == 4


# ----------------------------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_read_cifar10(tmp_path: Path, bytes_keys: bool) -> None:
    batches = write_cifar(tmp_path, 10, bytes_keys=bytes_keys)
    splits = read_cifar(tmp_path, 10)
    assert splits.name == "cifar10" and splits.class_names == [f"class{i}" for i in range(10)]
    assert splits.train.images.shape == (20, 3, 32, 32) and splits.test.images.shape == (4, 3, 32, 32)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    data, labels = batches["data_batch_2"]  # image 1 of batch 2 is train image 5; pixel (c=1, h=7, w=30)
    assert splits.train.images[5, 1, 7, 30].item() == data[1, 1024 + 7 * 32 + 30]
    assert splits.train.images[5].flatten().tolist() == data[1].tolist()
    assert splits.train.labels[4:8].tolist() == labels
    assert splits.test.labels.tolist() == batches["test_batch"][1]


def test_load_cifar100_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-100-python"
    batches = write_cifar(folder, 100, n=6)
    set_checksums(monkeypatch, "cifar100", md5_table(folder))
    splits = load_dataset("cifar100", tmp_path)
    assert len(splits.class_names) == 100 and splits.class_names[99] == "fine99"
    assert splits.train.images.shape == (6, 3, 32, 32)
    assert splits.test.images[3, 2, 31, 0].item() == batches["test"][0][3, 2048 + 31 * 32]
    assert splits.train.labels.tolist() == batches["train"][1]


def test_cifar_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, 10)
    table = md5_table(folder)
    table["data_batch_3"] = ("md5", "0" * 32)
    set_checksums(monkeypatch, "cifar10", table)
    with pytest.raises(UserError, match="checksum mismatch for .*data_batch_3"):
        load_dataset("cifar10", tmp_path)


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path, 10)
    (tmp_path / "test_batch").write_bytes((tmp_path / "test_batch").read_bytes()[:500])
    with pytest.raises(UserError, match="corrupt data file .*test_batch.*unreadable pickle"):
        read_cifar(tmp_path, 10)


def test_cifar_wrong_content(tmp_path: Path) -> None:
    write_cifar(tmp_path, 10)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(UserError, match="data_batch_1.*uint8 \\(N, 3072\\)"):
        read_cifar(tmp_path, 10)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path, 10)
    marker = tmp_path / "pwned"
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": RunsShell(marker)}, protocol=2))
    with pytest.raises(UserError, match="batches.meta.*not allowed"):
        read_cifar(tmp_path, 10)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# SVHN


def test_read_svhn(tmp_path: Path) -> None:
    content = write_svhn(tmp_path)
    splits = read_svhn(tmp_path)
    assert splits.name == "svhn" and splits.class_names == [str(d) for d in range(10)]
    assert splits.train.images.shape == (5, 3, 32, 32) and splits.test.images.shape == (3, 3, 32, 32)
    assert splits.train.labels.tolist() == [0, 1, 9, 0, 5] and splits.train.labels.dtype == torch.int64
    images = content["train_32x32.mat"][0]
    assert splits.train.images[4, 2, 3, 17].item() == images[3, 17, 2, 4]
    assert torch.equal(splits.test.images[1], torch.from_numpy(content["test_32x32.mat"][0][..., 1]).permute(2, 0, 1))


def test_load_svhn_verified_and_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "svhn"
    write_svhn(folder)
    set_checksums(monkeypatch, "svhn", md5_table(folder))
    assert len(load_dataset("svhn", tmp_path).train) == 5
    set_checksums(monkeypatch, "svhn", {})
    (folder / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but nothing else")
    with pytest.raises(UserError, match="corrupt data file .*test_32x32.mat"):
        load_dataset("svhn", tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Image folders and notMNIST


def test_read_image_folder_resizes_and_ignores_other_files(tmp_path: Path) -> None:
    for class_name, colour in (("dog", (200, 10, 30)), ("cat", (5, 250, 90))):
        (tmp_path / class_name).mkdir()
        Image.new("RGB", (12, 10), colour).save(tmp_path / class_name / "a.png")
        Image.new("RGB", (12, 10), colour).save(tmp_path / class_name / "b.JPG", quality=100)
        (tmp_path / class_name / "notes.txt").write_text("not an image")
    arrays, class_names = read_image_folder(tmp_path, (8, 6))
    assert class_names == ["cat", "dog"]
    assert arrays.images.shape == (4, 3, 8, 6) and arrays.images.dtype == torch.uint8
    assert arrays.labels.tolist() == [0, 0, 1, 1]
    assert arrays.images[0, :, 4, 3].tolist() == [5, 250, 90]  # a uniform PNG stays exact after resizing


def test_read_notmnist_split_and_unreadable_files(tmp_path: Path) -> None:
    letters = "ABCDEFGHIJ"
    pixels = write_notmnist(tmp_path, per_class=5)
    (tmp_path / "C" / "broken.png").write_bytes(b"")  # like the real data's few empty files
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        splits = read_notmnist(tmp_path)
    assert splits.name == "notmnist" and splits.class_names == list(letters)
    assert splits.train.images.shape == (40, 1, 28, 28) and splits.test.images.shape == (10, 1, 28, 28)
    assert splits.test.labels.tolist() == list(range(10))
    assert torch.equal(splits.test.images[2, 0], torch.from_numpy(pixels["C", 4]))  # last sorted name is test
    assert torch.equal(splits.train.images[4, 0], torch.from_numpy(pixels["B", 0]))


def test_notmnist_has_no_download_and_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="notMNIST_small") as error:
        load_dataset("notmnist", tmp_path, download=True)
    assert "\n" not in str(error.value) and "A not found" in str(error.value)


# ----------------------------------------------------------------------------------------------------------------
# MiniImageNet


def test_read_mini_imagenet(tmp_path: Path) -> None:
    by_class = write_mini_imagenet(tmp_path)
    splits = read_mini_imagenet(tmp_path)
    assert splits.name == "mini-imagenet" and splits.class_names == ["n00", "n01", "n02", "n03"]
    assert splits.train.images.shape == (40, 3, 84, 84) and splits.test.images.shape == (8, 3, 84, 84)
    assert splits.train.labels.bincount().tolist() == [10] * 4 and splits.test.labels.bincount().tolist() == [2] * 4
    n01_test = splits.test.images[splits.test.labels == 1]
    assert torch.equal(n01_test, torch.from_numpy(by_class["n01"][10:]).permute(0, 3, 1, 2))
    n03_train = splits.train.images[splits.train.labels == 3]
    assert n03_train[4, 2, 80, 1].item() == by_class["n03"][4, 80, 1, 2]


def test_load_mini_imagenet_found_and_missing_pickle(tmp_path: Path) -> None:
    write_mini_imagenet(tmp_path / "mini-imagenet", per_class=6)
    assert len(load_dataset("mini-imagenet", tmp_path).test) == 4
    (tmp_path / "mini-imagenet" / "mini-imagenet-cache-val.pkl").unlink()
    with pytest.raises(UserError, match="missing data file .*mini-imagenet-cache-val.pkl"):
        load_dataset("mini-imagenet", tmp_path)


def test_mini_imagenet_malicious_pickle_is_refused(tmp_path: Path) -> None:
    write_mini_imagenet(tmp_path, per_class=6)
    marker = tmp_path / "pwned"
    evil = {"image_data": RunsShell(marker), "class_dict": {}}
    (tmp_path / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps(evil))
    with pytest.raises(UserError, match="mini-imagenet-cache-test.pkl.*not allowed"):
        read_mini_imagenet(tmp_path)
    assert not marker.exists()
