"""Your own data (`data.source`): an image folder, a .npz of arrays, or a CSV / Parquet table, as a `Dataset` entry.

A source is described like the named datasets: `source_dataset` builds its `Dataset` (the path, a reader returning
`DatasetSplits`); `source_sha256` hashes its files for the run's fingerprint. docs/own-data.md is the user's guide.
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lifelong.data import tables
from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.data.labels import class_ids, holdout
from lifelong.data.readers import read_image_folder
from lifelong.data.sources import Dataset
from lifelong.errors import UserError, first_line

if TYPE_CHECKING:  # the config layer sits above data
    from lifelong.config import SourceConfig

FORMATS = {".npz": "npz", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}  # an existing folder: "images"
OPTIONS = {  # the source options each format reads (path aside); another one set away from its default is refused
    "images": {"size", "grey", "skip_unreadable", "test_split"},
    "npz": set(),
    "csv": {"label_column", "features", "task_column", "task_order", "split_column", "test_split"},
}
OPTIONS["parquet"] = OPTIONS["csv"]
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for this process


def source_format(path: Path) -> str:
    """The format of the source at ``path``: images (a folder), npz, csv or parquet."""
    if not path.exists():
        raise UserError(f"data.source.path {path} does not exist; give an image folder or a .npz, .csv or .parquet "
                        "file (a relative path is taken from the folder lifelong runs in)")
    if path.is_dir():
        return "images"
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"unknown data format of {path} ('{path.suffix}'); give an image folder (ROOT/CLASS/*.png) "
                        "or a .npz, .csv or .parquet file")
    return FORMATS[path.suffix.lower()]


def source_dataset(source: SourceConfig) -> Dataset:
    """The `Dataset` entry of a user's source: its path as the folder, the reader of its format."""
    path = Path(source.path)
    fmt = source_format(path)
    defaults = {key: field.default for key, field in type(source).model_fields.items()}
    stray = sorted(key for key in defaults if key != "path" and key not in OPTIONS[fmt]
                   and getattr(source, key) != defaults[key])
    if stray:
        raise UserError(f"data.source.{stray[0]} does not apply to {path} ({fmt}); remove it (docs/own-data.md "
                        "lists the options of each format)")
    readers = {"images": _read_images, "npz": _read_npz, "csv": tables.read_table, "parquet": tables.read_table}
    return Dataset(name=path.stem if path.is_file() else path.name, description=f"your own data: {path}",
                   folder=str(path), markers=(path.name,), reader=partial(readers[fmt], source=source),
                   manual=f"data.source.path names {path}; check the path")


def read_source(source: SourceConfig) -> DatasetSplits:
    """Read a user's source through its `Dataset` entry, as a named dataset is read."""
    dataset = source_dataset(source)
    splits = dataset.reader(Path(dataset.folder), dataset)
    _two_classes(splits, source)
    return splits


def _two_classes(splits: DatasetSplits, source: SourceConfig) -> None:
    """Refuse a source whose samples are all of one class: a classifier has nothing to tell apart."""
    present = torch.cat([splits.train.labels, splits.test.labels]).unique().tolist()
    if len(present) == 1:
        column = (f", or check data.source.label_column ({source.label_column!r})"
                  if source_format(Path(source.path)) in ("csv", "parquet") else "")
        raise UserError(f"{source.path} holds a single class ({splits.class_names[present[0]]!r}); a classifier "
                        f"needs at least two classes: add samples of another class{column}")


# ----------------------------------------------------------------------------------------------------------------
# Fingerprint


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, cached in this process while its size and modification time stay the same."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def source_sha256(path: str | Path) -> str:
    """sha256 of a source's content: a file's bytes, or a folder's files (not hidden ones) with their paths."""
    path = Path(path)
    source_format(path)
    if path.is_file():
        return file_sha256(path)
    files = sorted((file.relative_to(path).as_posix(), file) for file in path.rglob("*")
                   if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts))
    digest = hashlib.sha256()
    for name, file in files:
        digest.update(f"{name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Readers (the `Dataset.reader` contract: folder, entry -> DatasetSplits)


def _read_images(root: Path, dataset: Dataset, source: SourceConfig) -> DatasetSplits:
    """ROOT/CLASS/*.png (a seeded stratified test split), or ROOT/train/CLASS and ROOT/test/CLASS."""
    def read(folder: Path) -> tuple[ImageArrays, list[str]]:
        return read_image_folder(folder, source.size, source.grey, source.skip_unreadable)

    _check_split_folders(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        (train, names), (test, test_names) = read(root / "train"), read(root / "test")
        unknown = sorted(set(test_names) - set(names))
        if unknown:
            raise UserError(f"{root / 'test' / unknown[0]} is a class with no folder in {root / 'train'}; add its "
                            "training images or remove it")
        lookup = torch.tensor([names.index(name) for name in test_names], dtype=torch.int64)
        return DatasetSplits(dataset.name, train, ImageArrays(test.images, lookup[test.labels]), names)
    arrays, names = read(root)
    test = holdout(arrays.labels.numpy(), source.test_split)
    return DatasetSplits(dataset.name, arrays.subset(torch.from_numpy(~test)), arrays.subset(torch.from_numpy(test)),
                         names)


def _check_split_folders(root: Path) -> None:
    """Refuse ROOT/train/CLASS without ROOT/test (or the reverse): the root's folders would be taken as classes."""
    for name, other in (("train", "test"), ("test", "train")):
        folder = root / name
        if not folder.is_dir() or (root / other).is_dir():
            continue
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        if any(entry.is_dir() for entry in entries) and not any(entry.is_file() for entry in entries):
            raise UserError(f"{folder} holds class folders, but there is no {other}/ beside it: without both train/ "
                            f"and test/, the folders under {root} are taken as classes; add "
                            f"{root / other}/CLASS/*.png, or put the class folders directly under {root} (a test "
                            "split is then held out)")


def _read_npz(path: Path, dataset: Dataset, source: SourceConfig) -> DatasetSplits:
    """x_train, y_train, x_test, y_test (and optional class_names) from one .npz, without pickle."""
    archive = _load_npz(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds one array, not an .npz archive; save x_train, y_train, x_test, y_test with "
                        "numpy.savez")
    with archive:
        missing = [key for key in _NPZ_KEYS if key not in archive.files]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; save x_train, y_train, x_test, y_test with "
                            "numpy.savez")
        arrays = {key: _npz_array(archive, key, path) for key in (*_NPZ_KEYS, "class_names") if key in archive.files}
    _has_rows(arrays, path)
    x_train, x_test = _rows(arrays["x_train"], "x_train", path), _rows(arrays["x_test"], "x_test", path)
    if x_train.dtype != x_test.dtype or x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"x_train and x_test of {path} differ ({x_train.dtype} {tuple(x_train.shape[1:])} vs "
                        f"{x_test.dtype} {tuple(x_test.shape[1:])} per row); save both with one dtype and shape")
    labels = []
    for key, x in (("y_train", x_train), ("y_test", x_test)):
        y = arrays[key]
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{key} of {path} must hold one label per row of x_{key[2:]} ({len(x)}), got shape "
                            f"{y.shape}")
        labels.append(y)
    if "class_names" in arrays:
        names = [str(name) for name in arrays["class_names"].reshape(-1)]
        ids = [_label_ids(y, len(names), key, path) for y, key in zip(labels, ("y_train", "y_test"))]
    else:
        names, ids = class_ids(labels, f"the labels of {path}")
    return DatasetSplits(dataset.name, ImageArrays(x_train, ids[0]), ImageArrays(x_test, ids[1]), names)


def _load_npz(path: Path) -> Any:
    """np.load without pickle; a file that is neither a zip archive nor an .npy array is refused before numpy, whose
    message for it speaks of pickled data."""
    with path.open("rb") as stream:
        npy = stream.read(6) == b"\x93NUMPY"
    if not npy and not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a readable .npz file (not a zip archive of arrays); save x_train, y_train, "
                        "x_test, y_test with numpy.savez")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not a readable .npz file ({first_line(err)}); save it with numpy.savez") from None


def _has_rows(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Refuse an .npz with no rows at all, or none in x_train or x_test."""
    empty = [key for key in ("x_train", "x_test") if arrays[key].ndim > 0 and len(arrays[key]) == 0]
    if len(empty) == 2:
        raise UserError(f"{path} has no rows (x_train and x_test are empty); save one row per sample with "
                        "numpy.savez")
    if empty:
        raise UserError(f"{empty[0]} of {path} has no rows; save at least one row per class in x_train and in x_test")


def _npz_array(archive: Any, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError:  # an object array: rows of different sizes, which only pickle could hold
        raise UserError(f"{key} of {path} is an object array (ragged: rows or images of different sizes?); save "
                        "one regular array, every image resized to one size") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{key} of {path} cannot be read ({first_line(err)}); save the file again") from None


def _rows(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """uint8 images N×H×W or N×H×W×C → (N, C, H, W); numeric features N×D → float32 (N, D, 1, 1)."""
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
            raise UserError(f"{key} of {path} has the shape {list(x.shape)}, which looks channel-first; save images "
                            "as N×H×W×C (x.transpose(0, 2, 3, 1))")
        images = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 2 and (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) \
            and not np.issubdtype(x.dtype, np.complexfloating):
        features = x.astype(np.float32)
        if not np.isfinite(features).all():
            row = int(np.flatnonzero(~np.isfinite(features).all(1))[0])
            raise UserError(f"{key} of {path} holds a missing or infinite value (row {row + 1}); fill or drop it")
        return torch.from_numpy(features[:, :, None, None].copy())
    raise UserError(f"{key} of {path} is {x.dtype} of shape {x.shape}; save uint8 images N×H×W or N×H×W×C, or "
                    "numeric feature vectors N×D")


def _label_ids(y: np.ndarray, classes: int, key: str, path: Path) -> torch.Tensor:
    """Integer labels 0..classes-1 (the file names its classes) as int64."""
    if not np.issubdtype(y.dtype, np.integer) or y.min(initial=0) < 0 or y.max(initial=0) >= classes:
        raise UserError(f"{key} of {path} must hold integers 0..{classes - 1} (its class_names has {classes} names)")
    return torch.from_numpy(y.astype(np.int64))


# ----------------------------------------------------------------------------------------------------------------
# Tasks


def class_groups(dataset: DatasetSplits, tasks: list[list[str | int]] | None, classes_per_task: int | None,
                 where: str) -> list[list[int]]:
    """The class ids of each task: ``tasks`` by class name (or id), else runs of ``classes_per_task`` (default 2);
    every class used must have training and test samples."""
    names = dataset.class_names
    if tasks is None:
        per = classes_per_task or 2
        groups = [list(range(start, min(start + per, len(names)))) for start in range(0, len(names), per)]
    else:
        groups = [[_class_id(item, names, where) for item in group] for group in tasks]
    for split, arrays in (("training", dataset.train), ("test", dataset.test)):
        present = set(arrays.labels.unique().tolist())
        empty = [names[c] for group in groups for c in group if c not in present]
        if empty:
            raise UserError(f"class {empty[0]!r} of {where} has no {split} samples; add some, or leave it out of "
                            "data.tasks")
    return groups


def check_trained_classes(dataset: DatasetSplits, where: str) -> None:
    """Every class with test samples has training samples (in some task): else it would be scored, never learnt."""
    trained = set(dataset.train.labels.unique().tolist())
    untrained = [c for c in dataset.test.labels.unique().tolist() if c not in trained]
    if untrained:
        raise UserError(f"class {dataset.class_names[untrained[0]]!r} of {where} has test samples but no training "
                        "samples; add some, or drop its rows")


def _class_id(item: str | int, names: list[str], where: str) -> int:
    """A class named in data.tasks: by name first, else by id (its position among the sorted class names)."""
    if str(item) in names:
        return names.index(str(item))
    if isinstance(item, int) and 0 <= item < len(names):
        return item
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    raise UserError(f"data.tasks names class {item!r}, which {where} does not have; its classes: {shown}")
