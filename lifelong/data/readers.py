"""Dataset file formats, read into `DatasetSplits`: uint8 images (N, C, H, W), int64 labels 0..K-1, class names.

Every reader validates its format and, given checksums, verifies each file before using it. Pickles (CIFAR,
MiniImageNet) are read with an unpickler that only builds numpy arrays and plain containers, so a malicious file
cannot run code. The notMNIST and MiniImageNet train/test splits are ours (docs/data.md, "Splits we define").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.errors import UserError

Checksum = tuple[str, str]  # (hashlib algorithm, hex digest)

DIGITS = tuple(str(digit) for digit in range(10))  # class names of MNIST and SVHN

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# The only globals a CIFAR or MiniImageNet pickle needs: numpy array/scalar reconstruction (numpy 1 and 2
# module paths) and the builtins behind sets and protocol-2 bytes.
_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("_codecs", "encode"),
})


def read_checked(path: Path, checksum: Checksum | None = None, gunzip: bool = False) -> bytes:
    """A file's (optionally gunzipped) bytes, checked against `checksum` when one is given."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _missing(path) from None
    if gunzip:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise _corrupt(path, f"bad gzip data: {err}") from err
    if checksum is not None:
        algorithm, expected = checksum
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected:
            raise UserError(
                f"checksum mismatch for {path} ({algorithm} {actual}, expected {expected}): the file is corrupt or "
                "not the official version; delete it and download it again"
            )
    return data


def _missing(path: Path) -> UserError:
    """The error for a file missing from a dataset folder that was found."""
    return UserError(f"missing data file {path}: the dataset folder {path.parent} is incomplete; restore the file, "
                     "or delete the folder and get the dataset again")


def _corrupt(path: Path, reason: str) -> UserError:
    """The error for a file that exists but cannot be read as its format."""
    reason = " ".join(reason.split())
    return UserError(f"corrupt data file {path} ({reason}); delete it and download it again")


def read_idx(path: str | Path, checksum: Checksum | None = None) -> torch.Tensor:
    """Read an IDX file (raw or .gz), validating magic number, dtype code, dims and size."""
    path = Path(path)
    return _parse_idx(read_checked(path, checksum, gunzip=path.suffix == ".gz"), path)


def _parse_idx(data: bytes, path: Path) -> torch.Tensor:
    """Decode IDX bytes: 0, 0, dtype code, ndim, then ndim big-endian uint32 sizes, then the values."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _corrupt(path, "bad magic number, not an IDX file")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise _corrupt(path, f"unknown IDX dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _corrupt(path, "truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)
    if len(data) != header + count * dtype.itemsize:
        raise _corrupt(path, f"size {len(data)} bytes does not match IDX shape {shape}")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="))).reshape(shape)


def read_mnist(folder: str | Path, name: str = "mnist", checksums: Mapping[str, Checksum] | None = None,
               class_names: Sequence[str] = DIGITS) -> DatasetSplits:
    """Read the four MNIST-format IDX files (raw or .gz) of MNIST, or of Fashion-MNIST with its `class_names`."""
    folder = Path(folder)
    checksums = checksums or {}
    splits = []
    for prefix in ("train", "t10k"):
        images_path, images = _read_idx_in(folder, f"{prefix}-images-idx3-ubyte", checksums)
        labels_path, labels = _read_idx_in(folder, f"{prefix}-labels-idx1-ubyte", checksums)
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise _corrupt(images_path, "not uint8 (N, H, W) images")
        if labels.dtype != torch.uint8 or labels.shape != images.shape[:1] or bool((labels >= 10).any()):
            raise _corrupt(labels_path, "not one uint8 label in 0..9 per image")
        splits.append(ImageArrays(images.unsqueeze(1), labels.long()))
    return DatasetSplits(name, splits[0], splits[1], list(class_names))


def _read_idx_in(folder: Path, stem: str, checksums: Mapping[str, Checksum]) -> tuple[Path, torch.Tensor]:
    """Read `stem.gz`, or `stem` when there is no .gz, verifying its content against `checksums[stem]`."""
    path = folder / f"{stem}.gz"
    if not path.exists():
        path = folder / stem
    if not path.exists():
        raise _missing(folder / f"{stem}.gz")
    return path, read_idx(path, checksums.get(stem))


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that can only build numpy arrays and plain containers, never call arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def _unpickle(stream: BinaryIO, path: Path) -> dict[str, Any]:
    """Load a data pickle safely (Python 2 strings as latin-1) into a dict with str keys."""
    try:
        obj = _SafeUnpickler(stream, encoding="latin1").load()
    except Exception as err:  # malformed pickles can fail in any constructor; all mean "corrupt file"
        raise _corrupt(path, f"unreadable pickle: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a pickled dict, got {type(obj).__name__}")
    return {_text(key): value for key, value in obj.items()}


def _text(value: Any) -> str:
    """A pickled name as str: Python 3 pickles of the data hold bytes, Python 2 ones str."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_cifar(folder: str | Path, which: int = 10, checksums: Mapping[str, Checksum] | None = None
               ) -> DatasetSplits:
    """Read the python-version CIFAR-10 (`which=10`) or CIFAR-100 (`which=100`, fine labels) batches."""
    if which not in (10, 100):
        raise ValueError(f"which must be 10 or 100, got {which}")
    folder = Path(folder)
    checksums = checksums or {}
    if which == 10:
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        meta_file, names_key, labels_key = "batches.meta", "label_names", "labels"
    else:
        train_files, test_files = ["train"], ["test"]
        meta_file, names_key, labels_key = "meta", "fine_label_names", "fine_labels"

    def load(filename: str) -> dict[str, Any]:
        path = folder / filename
        return _unpickle(io.BytesIO(read_checked(path, checksums.get(filename))), path)

    meta = load(meta_file)
    names = meta.get(names_key)
    if not isinstance(names, list) or len(names) != which:
        raise _corrupt(folder / meta_file, f"expected {which} {names_key}")
    class_names = [_text(label_name) for label_name in names]

    def split(filenames: list[str]) -> ImageArrays:
        images, labels = [], []
        for filename in filenames:
            batch = load(filename)
            data, batch_labels = batch.get("data"), batch.get(labels_key)
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                    and data.shape[1] == 3 * 32 * 32):
                raise _corrupt(folder / filename, "'data' is not a uint8 (N, 3072) array")
            try:
                batch_labels = np.asarray(batch_labels, dtype=np.int64)
            except (TypeError, ValueError) as err:
                raise _corrupt(folder / filename, f"bad {labels_key}: {err}") from err
            if batch_labels.shape != (data.shape[0],) or batch_labels.min(initial=0) < 0 \
                    or batch_labels.max(initial=0) >= which:
                raise _corrupt(folder / filename, f"{labels_key} do not match the images")
            images.append(data)
            labels.append(batch_labels)
        images_nchw = np.concatenate(images).reshape(-1, 3, 32, 32)
        return ImageArrays(torch.from_numpy(images_nchw), torch.from_numpy(np.concatenate(labels)))

    return DatasetSplits(f"cifar{which}", split(train_files), split(test_files), class_names)


def read_svhn(folder: str | Path, checksums: Mapping[str, Checksum] | None = None,
              class_names: Sequence[str] = DIGITS) -> DatasetSplits:
    """Read SVHN's train_32x32.mat and test_32x32.mat (X: 32x32x3xN uint8, y: Nx1 with 10 meaning digit 0)."""
    folder = Path(folder)
    checksums = checksums or {}
    splits = []
    for filename in ("train_32x32.mat", "test_32x32.mat"):
        path = folder / filename
        data = read_checked(path, checksums.get(filename))
        import scipy.io  # only SVHN's .mat files need it: not paid at every start

        try:
            mat = scipy.io.loadmat(io.BytesIO(data))
        except Exception as err:  # scipy raises many types for malformed .mat files; all mean "corrupt file"
            raise _corrupt(path, f"unreadable .mat file: {type(err).__name__}: {err}") from err
        images, digits = mat.get("X"), mat.get("y")
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
                and images.shape[:3] == (32, 32, 3)):
            raise _corrupt(path, "X is not a uint8 32x32x3xN array")
        if not isinstance(digits, np.ndarray) or digits.size != images.shape[3]:
            raise _corrupt(path, "y does not match X")
        digits = digits.reshape(-1).astype(np.int64)
        if digits.min(initial=1) < 1 or digits.max(initial=1) > 10:
            raise _corrupt(path, "y holds values outside 1..10")
        images_nchw = np.ascontiguousarray(images.transpose(3, 2, 0, 1))
        splits.append(ImageArrays(torch.from_numpy(images_nchw), torch.from_numpy(digits % 10)))
    return DatasetSplits("svhn", splits[0], splits[1], list(class_names))


def read_image_folder(folder: str | Path, size: int | tuple[int, int], grey: bool = False,
                      skip_unreadable: bool = True) -> tuple[ImageArrays, list[str]]:
    """Read folder/CLASS_NAME/*.png|jpg|... into uint8 images resized to `size` (H, W); unreadable files are
    skipped with a warning, or refused (listed) when `skip_unreadable` is false."""
    folder = Path(folder)
    height, width = (size, size) if isinstance(size, int) else size
    mode = "L" if grey else "RGB"
    class_names = sorted(entry.name for entry in folder.iterdir()
                         if entry.is_dir() and not entry.name.startswith(".")) if folder.is_dir() else []
    if not class_names:
        raise UserError(f"no class folders in {folder}: expected {folder}/CLASS_NAME/*.png")
    images, labels, skipped = [], [], []
    for label, class_name in enumerate(class_names):
        for path in sorted((folder / class_name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            pixels = _load_image(path, (width, height), mode)
            if pixels is None:
                skipped.append(path)
                continue
            images.append(pixels)
            labels.append(label)
    if skipped and not skip_unreadable:
        names = ", ".join(str(path.relative_to(folder)) for path in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise UserError(f"{len(skipped)} unreadable image file(s) under {folder}: {names}{more}; fix or delete them, "
                        "or set data.source.skip_unreadable: true to leave them out")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) under {folder}, e.g. {skipped[0]}",
                      stacklevel=2)
    if not images:
        raise UserError(f"no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of {folder}")
    stacked = torch.from_numpy(np.stack(images))
    images_nchw = stacked.unsqueeze(1) if grey else stacked.permute(0, 3, 1, 2).contiguous()
    return ImageArrays(images_nchw, torch.tensor(labels, dtype=torch.int64)), class_names


def _load_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray | None:
    """One image as a uint8 array in PIL `mode` at `size` (W, H), or None if the file cannot be decoded."""
    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: convert would clip at 255
                image = Image.fromarray(np.clip(np.asarray(image).astype(np.int64) >> 8, 0, 255).astype(np.uint8), "L")
            converted = image.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


def _split_rows(rows: Sequence[int], test_divisor: int) -> tuple[Sequence[int], Sequence[int]]:
    """Split one class's rows, kept in order: the last len // test_divisor are test, the rest train."""
    cut = len(rows) - len(rows) // test_divisor
    return rows[:cut], rows[cut:]


def read_notmnist(folder: str | Path) -> DatasetSplits:
    """Read notMNIST_small (A..J of 28x28 PNGs); per letter, by sorted file name, the last fifth is test."""
    arrays, class_names = read_image_folder(folder, 28, grey=True)
    train_rows: list[int] = []
    test_rows: list[int] = []
    for label in range(len(class_names)):
        rows = (arrays.labels == label).nonzero().flatten().tolist()
        class_train, class_test = _split_rows(rows, 5)
        train_rows.extend(class_train)
        test_rows.extend(class_test)
    train = arrays.subset(torch.tensor(train_rows, dtype=torch.long))
    test = arrays.subset(torch.tensor(test_rows, dtype=torch.long))
    return DatasetSplits("notmnist", train, test, class_names)


def read_mini_imagenet(folder: str | Path) -> DatasetSplits:
    """Read and merge the three MiniImageNet pickles; per class (sorted wnids) the first 5/6 train, last 1/6 test."""
    folder = Path(folder)
    parts: dict[str, tuple[list[np.ndarray], list[tuple[str, int]]]] = {"train": ([], []), "test": ([], [])}
    for split in ("train", "val", "test"):
        images, class_dict = _read_mini_imagenet_pickle(folder / f"mini-imagenet-cache-{split}.pkl")
        for wnid in sorted(class_dict):
            for part, rows in zip(("train", "test"), _split_rows(class_dict[wnid], 6)):
                parts[part][0].append(np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2)))
                parts[part][1].append((wnid, len(rows)))
        del images  # free each pickle before reading the next
    class_names = sorted({wnid for wnid, _ in parts["train"][1]})
    label_of = {wnid: label for label, wnid in enumerate(class_names)}

    def arrays(part: str) -> ImageArrays:
        pieces, counts = parts[part]
        labels = torch.cat([torch.full((count,), label_of[wnid], dtype=torch.int64) for wnid, count in counts])
        return ImageArrays(torch.from_numpy(np.concatenate(pieces)), labels)

    return DatasetSplits("mini-imagenet", arrays("train"), arrays("test"), class_names)


def _read_mini_imagenet_pickle(path: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    """One MiniImageNet pickle: 'image_data' uint8 (N, 84, 84, 3) and 'class_dict' {wnid: [row, ...]}."""
    if not path.is_file():
        raise _missing(path)
    with path.open("rb") as stream:
        content = _unpickle(stream, path)
    images, class_dict = content.get("image_data"), content.get("class_dict")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[1:] == (84, 84, 3)):
        raise _corrupt(path, "'image_data' is not a uint8 (N, 84, 84, 3) array")
    if not isinstance(class_dict, dict):
        raise _corrupt(path, "'class_dict' is not a dict")
    classes = {}
    for wnid, rows in class_dict.items():
        rows = [int(row) for row in rows]
        if not rows or min(rows) < 0 or max(rows) >= images.shape[0]:
            raise _corrupt(path, f"class {_text(wnid)} lists rows outside 'image_data'")
        classes[_text(wnid)] = rows
    return images, classes
