"""Small dataset files in the official formats, for tests: the real datasets are not available here.

Each writer produces files that `lifelong.data.sources` reads exactly as it reads the originals (IDX, python-version
CIFAR pickles, SVHN .mat, notMNIST PNG folders, MiniImageNet cache pickles). `make_data_root` writes whole datasets
(every class) into the folder layout `load_dataset` looks for, and `checksum_tables` / `patch_checksums` compute the
checksum tables that make the generated files verify, so the readers' verification stays on in tests.
`set_checksums` swaps one registry entry's checksums for a test's duration (monkeypatch undoes it).

Imported by the test modules as `from fakedata import ...` (pytest puts tests/ on sys.path: it has no __init__.py).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from lifelong.data import sources

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}

NOTMNIST_LETTERS = "ABCDEFGHIJ"
ALL_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "notmnist", "mini-imagenet")

# MiniImageNet's 100 classes as in the Ravi & Larochelle split: 64 train, 16 val, 20 test classes. The wnids are
# numbered so that label k (sorted wnid order, as the reader assigns them) is f"n{k:08d}", and are interleaved
# across the three pickles so that merging them really has to sort.
MINI_IMAGENET_WNIDS = [f"n{k:08d}" for k in range(100)]
MINI_IMAGENET_LAYOUT = {
    "train": [w for k, w in enumerate(MINI_IMAGENET_WNIDS) if k % 25 < 16],
    "val": [w for k, w in enumerate(MINI_IMAGENET_WNIDS) if 16 <= k % 25 < 20],
    "test": [w for k, w in enumerate(MINI_IMAGENET_WNIDS) if k % 25 >= 20],
}


def _balanced_labels(rng: np.random.Generator, num_classes: int, per_class: int) -> np.ndarray:
    """`per_class` samples of every class 0..num_classes-1, in random order."""
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


# ----------------------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX: magic (0, 0, dtype code, ndim), big-endian sizes, big-endian values."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(folder: Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0,
                balanced: bool = False) -> dict[str, np.ndarray]:
    """Write the four MNIST IDX files; return their arrays by file stem.

    Labels are random in 0..9, or with `balanced` (n_train and n_test multiples of 10) each digit equally often.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        if balanced:
            if n % 10:
                raise ValueError(f"balanced labels need a multiple of 10 images, got {n}")
            arrays[f"{prefix}-labels-idx1-ubyte"] = _balanced_labels(rng, 10, n // 10).astype(np.uint8)
        else:
            arrays[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def sha256_table(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """The checksum table that matches generated IDX files (sha256 of the decompressed content)."""
    return {stem: ("sha256", hashlib.sha256(idx_bytes(array)).hexdigest()) for stem, array in arrays.items()}


def md5_table(folder: Path) -> dict[str, tuple[str, str]]:
    """A checksum table with the md5 of every file in `folder`."""
    return {path.name: ("md5", hashlib.md5(path.read_bytes()).hexdigest()) for path in folder.iterdir()}


# ----------------------------------------------------------------------------------------------------------------
# CIFAR


def write_cifar(folder: Path, which: int, n: int = 4, bytes_keys: bool = True, per_class: int | None = None
                ) -> dict[str, tuple[np.ndarray, list]]:
    """Write python-version CIFAR batches and meta (protocol 2 dicts, like the originals); return data by file.

    Without `per_class`, every batch file holds `n` images with random labels. With it, the train split (the five
    data_batch files for CIFAR-10, spread as evenly as possible, or `train`) and the test split each hold
    `per_class` images of every class, in random order.
    """
    rng = np.random.default_rng(which)
    key = (lambda text: text.encode()) if bytes_keys else (lambda text: text)
    folder.mkdir(parents=True, exist_ok=True)
    if which == 10:
        train_files, test_files, labels_key = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
        meta_file, names_key, names = "batches.meta", "label_names", [f"class{i}" for i in range(10)]
    else:
        train_files, test_files, labels_key = ["train"], ["test"], "fine_labels"
        meta_file, names_key, names = "meta", "fine_label_names", [f"fine{i}" for i in range(100)]
    labels_by_file: dict[str, list[int]] = {}
    for files in (train_files, test_files):
        if per_class is None:
            for filename in files:
                labels_by_file[filename] = [int(label) for label in rng.integers(0, which, n)]
        else:
            chunks = np.array_split(_balanced_labels(rng, which, per_class), len(files))
            labels_by_file.update({filename: chunk.tolist() for filename, chunk in zip(files, chunks)})
    batches = {}
    for filename in train_files + test_files:
        labels = labels_by_file[filename]
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        batches[filename] = (data, labels)
        content = {key("batch_label"): key(filename), key(labels_key): labels, key("data"): data,
                   key("filenames"): [key(f"img{i}.png") for i in range(len(labels))]}
        if which == 100:
            content[key("coarse_labels")] = [label // 5 for label in labels]
        (folder / filename).write_bytes(pickle.dumps(content, protocol=2))
    meta = {key(names_key): [key(name) for name in names], key("num_vis"): 3072}
    (folder / meta_file).write_bytes(pickle.dumps(meta, protocol=2))
    return batches


# ----------------------------------------------------------------------------------------------------------------
# SVHN


def write_svhn(folder: Path, n_train: int = 5, n_test: int = 3, per_class: int | None = None
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write SVHN-format .mat files: X (32, 32, 3, N) uint8, y (N, 1) uint8 in 1..10 (10 = digit 0).

    Without `per_class`, y is the fixed sequence 10, 1, 9, 10, 5 cut to N (N at most 5); with it, each split holds
    `per_class` images of every digit in random order (n_train and n_test are then ignored).
    """
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for filename, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        if per_class is None:
            digits = np.array([[10], [1], [9], [10], [5]][:n], dtype=np.uint8)
        else:
            digits = (_balanced_labels(rng, 10, per_class) + 1).astype(np.uint8).reshape(-1, 1)
        images = rng.integers(0, 256, (32, 32, 3, len(digits)), dtype=np.uint8)
        scipy.io.savemat(folder / filename, {"X": images, "y": digits})
        content[filename] = images, digits
    return content


# ----------------------------------------------------------------------------------------------------------------
# notMNIST


def write_notmnist(folder: Path, per_class: int = 5, seed: int = 2, letters: str = NOTMNIST_LETTERS
                   ) -> dict[tuple[str, int], np.ndarray]:
    """Write notMNIST_small-style folders A..J of grey 28x28 PNGs font0.png, font1.png...; return pixels by (letter, i)."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for letter in letters:
        (folder / letter).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels[letter, i] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels[letter, i], mode="L").save(folder / letter / f"font{i}.png")
    return pixels


# ----------------------------------------------------------------------------------------------------------------
# MiniImageNet


def write_mini_imagenet(folder: Path, per_class: int = 12, layout: dict[str, list[str]] | None = None,
                        seed: int = 3) -> dict[str, np.ndarray]:
    """Write the three cache pickles (class rows shuffled, mixed pickle protocols); return each class's images.

    `layout` maps each split (train, val, test) to its wnids; the default is a tiny 4-class one.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    layout = layout or {"train": ["n03", "n01"], "val": ["n02"], "test": ["n00"]}
    by_class = {}
    for protocol, split in zip((2, 5, 4), ("train", "val", "test")):
        wnids = layout[split]
        images = rng.integers(0, 256, (per_class * len(wnids), 84, 84, 3), dtype=np.uint8)
        order = rng.permutation(len(images))
        class_dict = {wnid: [int(row) for row in order[i * per_class:(i + 1) * per_class]]
                      for i, wnid in enumerate(wnids)}
        by_class.update({wnid: images[rows] for wnid, rows in class_dict.items()})
        content = {"image_data": images, "class_dict": class_dict}
        (folder / f"mini-imagenet-cache-{split}.pkl").write_bytes(pickle.dumps(content, protocol=protocol))
    return by_class


# ----------------------------------------------------------------------------------------------------------------
# Whole data roots


def make_data_root(root: Path, datasets: Iterable[str], per_class: int) -> None:
    """Write each named dataset, with all its classes, into `root/<DATASETS[name].folder>` as `load_dataset` expects.

    MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN get `per_class` images of every class in both their train and
    test files. notMNIST and MiniImageNet have no official split (the readers keep the last fifth / sixth of each
    class for test), so they get max(per_class, 5) / max(per_class, 6) images per class in all, which leaves at
    least one test image per class. Use `patch_checksums` so the generated files verify.
    """
    root = Path(root)
    for name in datasets:
        if name not in ALL_DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(ALL_DATASETS)}")
        folder = root / sources.DATASETS[name].folder
        if name in ("mnist", "fashion-mnist"):
            write_mnist(folder, 10 * per_class, 10 * per_class, seed=ALL_DATASETS.index(name), balanced=True)
        elif name in ("cifar10", "cifar100"):
            write_cifar(folder, 10 if name == "cifar10" else 100, per_class=per_class)
        elif name == "svhn":
            write_svhn(folder, per_class=per_class)
        elif name == "notmnist":
            write_notmnist(folder, per_class=max(per_class, 5))
        else:
            write_mini_imagenet(folder, per_class=max(per_class, 6), layout=MINI_IMAGENET_LAYOUT)


def checksum_tables(root: Path, datasets: Iterable[str] | None = None) -> dict[str, dict[str, tuple[str, str]]]:
    """Checksum tables (by dataset name) computed from the files under `root`, the way the real ones were computed.

    MNIST/Fashion-MNIST: sha256 of each IDX file's decompressed content; CIFAR and SVHN: md5 of every file in the
    dataset folder. Datasets without a folder under `root`, and notMNIST/MiniImageNet (never checksummed), are
    skipped.
    """
    tables = {}
    for name in datasets if datasets is not None else sources.DATASETS:
        folder = Path(root) / sources.DATASETS[name].folder
        if not sources.DATASETS[name].checksums or not folder.is_dir():
            continue
        if name in ("mnist", "fashion-mnist"):
            table = {}
            for path in folder.iterdir():
                data = path.read_bytes()
                stem = path.name[:-3] if path.name.endswith(".gz") else path.name
                table[stem] = ("sha256", hashlib.sha256(gzip.decompress(data) if path.name.endswith(".gz")
                                                        else data).hexdigest())
            tables[name] = table
        else:
            tables[name] = md5_table(folder)
    return tables


def set_checksums(monkeypatch: pytest.MonkeyPatch, name: str, table: dict[str, tuple[str, str]]) -> None:
    """Give dataset `name` the checksums `table` for the test's duration: its registry entry is swapped for a copy."""
    monkeypatch.setitem(sources.DATASETS, name, replace(sources.DATASETS[name], checksums=table))


def patch_checksums(monkeypatch: pytest.MonkeyPatch, root: Path, datasets: Iterable[str] | None = None,
                    tables: dict[str, dict[str, tuple[str, str]]] | None = None) -> dict[str, dict]:
    """Replace registry entries' checksums (for the test's duration) by ones the files under `root` match.

    Pass precomputed `tables` (from `checksum_tables`) to skip hashing the files again. Returns the tables used.
    """
    tables = tables if tables is not None else checksum_tables(root, datasets)
    for name, table in tables.items():
        set_checksums(monkeypatch, name, table)
    return tables
