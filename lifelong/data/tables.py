"""Tables as a user's source: CSV (stdlib csv) or Parquet (pyarrow, the `parquet` extra) with feature columns, a
label column, and optional task and split columns. Features become float32 rows (N, D, 1, 1)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.data.labels import class_ids, holdout
from lifelong.errors import UserError, first_line

if TYPE_CHECKING:
    from lifelong.config import SourceConfig
    from lifelong.data.sources import Dataset


@dataclass
class Column:
    """One column: numbers (a numeric array) or text (a str array), and its first missing row (None: none)."""

    values: np.ndarray
    missing: int | None = None

    @property
    def numeric(self) -> bool:
        return self.values.dtype.kind in "biuf"


def read_table(path: Path, dataset: Dataset, source: SourceConfig) -> DatasetSplits:
    """A CSV or Parquet table → DatasetSplits (with each row's task-column value when there is one)."""
    _check_roles(source, path)
    columns = read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else read_csv(path)
    rows = len(next(iter(columns.values())).values)
    label = _labels(_column(columns, source.label_column, "label_column", path), source.label_column, path)
    special = {source.label_column, source.task_column, source.split_column}
    names = source.features or [name for name in columns if name not in special]
    if not names:
        raise UserError(f"{path} has no feature columns besides {', '.join(n for n in special if n)}; add some")
    features = np.empty((rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        features[:, j] = _numbers(_column(columns, name, "features", path), name, path)
    keep = np.ones(rows, dtype=bool)
    groups, group_names = None, None
    if source.task_column:
        values = _text(_column(columns, source.task_column, "task_column", path), source.task_column, path)
        group_names = _task_order(values, source.task_order, source.task_column, path)
        index = {name: i for i, name in enumerate(group_names)}
        groups = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int64)
        keep = groups >= 0  # rows of values task_order leaves out
    if source.split_column:
        split = np.char.lower(np.char.strip(_text(_column(columns, source.split_column, "split_column", path),
                                                  source.split_column, path)))
        bad = np.flatnonzero((split != "train") & (split != "test"))
        if len(bad):
            raise UserError(f"column {source.split_column!r} of {path} holds {str(split[bad[0]])!r} (row "
                            f"{bad[0] + 1}); each row's split must be train or test")
        test = split == "test"
    else:
        keys = label.astype(str)
        if groups is not None:  # (task, class) keys, as ever, unless two pairs share one: numpy drops the "\0", so
            joined = np.char.add(groups.astype(str), "\0" + keys)  # task 1 + "12" = task 11 + "2"
            pairs = len(set(zip(groups.tolist(), keys.tolist())))
            apart = np.char.add(np.char.add(groups.astype(str), "\x1f"), keys)  # a separator numpy keeps
            keys = joined if len(np.unique(joined)) == pairs else apart
        test = holdout(np.where(keep, keys, "\0left out"), source.test_split)
    train_rows, test_rows = np.flatnonzero(keep & ~test), np.flatnonzero(keep & test)
    class_names, (train_y, test_y) = class_ids([label[train_rows], label[test_rows]], f"the labels of {path}")

    def arrays(rows: np.ndarray, y: torch.Tensor) -> ImageArrays:
        x = torch.from_numpy(features[rows][:, :, None, None].copy())
        return ImageArrays(x, y, None if groups is None else torch.from_numpy(groups[rows]))

    train, test_arrays = arrays(train_rows, train_y), arrays(test_rows, test_y)
    for i, value in enumerate(group_names or []):
        for split_name, part in (("training", train), ("test", test_arrays)):
            if not bool((part.groups == i).any()):
                raise UserError(f"task {source.task_column}={value} of {path} has no {split_name} rows; give it "
                                "some, or leave it out of data.source.task_order")
    return DatasetSplits(dataset.name, train, test_arrays, class_names, group_names)


def _check_roles(source: SourceConfig, path: Path) -> None:
    """Refuse one column in two roles: the label column as the task or split column or a feature, or task = split."""
    if source.task_column == source.label_column:
        raise UserError(f"data.source.task_column names the label column {source.label_column!r} of {path}, which "
                        "would make each task one class; name another column (a month, a site), or leave it out and "
                        "group classes with data.tasks or data.classes_per_task")
    if source.split_column is not None and source.split_column in (source.label_column, source.task_column):
        role = "label_column" if source.split_column == source.label_column else "task_column"
        raise UserError(f"data.source.split_column and {role} both name column {source.split_column!r} of {path}; "
                        "the split column holds train or test, so name another column")
    if source.label_column in (source.features or []):
        raise UserError(f"data.source.features names the label column {source.label_column!r} of {path}, which "
                        "would give the model its answer; remove it from the features")


def _column(columns: dict[str, Column], name: str, option: str, path: Path) -> Column:
    """The column ``name``; a missing one is refused, naming the option and the columns there are."""
    if name not in columns:
        shown = ", ".join(list(columns)[:12]) + (", ..." if len(columns) > 12 else "")
        raise UserError(f"{path} has no column {name!r} (data.source.{option}); its columns: {shown}")
    return columns[name]


def _missing(column: Column, name: str, path: Path) -> None:
    """Refuse a column with missing values, naming the first."""
    if column.missing is not None:
        raise UserError(f"column {name!r} of {path} has missing values (first at row {column.missing + 1}); fill "
                        "them or drop those rows")


def _labels(column: Column, name: str, path: Path) -> np.ndarray:
    """A label column's values (text or numbers), missing ones refused."""
    _missing(column, name, path)
    return column.values


def _text(column: Column, name: str, path: Path) -> np.ndarray:
    """A column's values as text, missing ones refused."""
    _missing(column, name, path)
    return column.values.astype(str)


def _numbers(column: Column, name: str, path: Path) -> np.ndarray:
    """A feature column as float64; text, missing and infinite values refused."""
    _missing(column, name, path)
    values = column.values
    if values.dtype.kind == "U":
        try:
            values = values.astype(np.float64)
        except ValueError:
            row, bad = next((i, v) for i, v in enumerate(values.tolist()) if not _is_number(v))
            what = "mixes numbers and text" if any(_is_number(v) for v in values.tolist()) else "is text"
            raise UserError(f"column {name!r} of {path} {what} ({bad[:40]!r} at row {row + 1}); feature columns "
                            "must be numeric: convert it, or name the numeric columns in data.source.features"
                            ) from None
    elif not column.numeric:
        raise UserError(f"column {name!r} of {path} is {values.dtype}, not numeric; feature columns must be numeric: "
                        "convert it, or name the numeric columns in data.source.features")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise UserError(f"column {name!r} of {path} has missing or infinite values (first at row {row + 1}); fill "
                        "them or drop those rows")
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _task_order(values: np.ndarray, order: list[str | int] | None, name: str, path: Path) -> list[str]:
    """The task-column values in task order: as data.source.task_order lists them, else sorted (numbers by value)."""
    distinct = sorted(set(values.tolist()))
    if order is None:
        return sorted(distinct, key=float) if all(_is_number(v) for v in distinct) else distinct
    order = [str(value) for value in order]
    unknown = [value for value in order if value not in distinct]
    if unknown:
        raise UserError(f"data.source.task_order names {unknown[0]!r}, which column {name!r} of {path} does not hold; "
                        f"its values: {', '.join(distinct[:12])}")
    if len(set(order)) != len(order):
        raise UserError(f"data.source.task_order names a value twice ({order}); name each task once")
    return order


# ----------------------------------------------------------------------------------------------------------------
# File formats


def read_csv(path: Path) -> dict[str, Column]:
    """A CSV file with a header row; every column as text, empty cells missing."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            lines = [line for line in csv.reader(stream) if line]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save the table as UTF-8 CSV") from None
    except csv.Error as err:
        raise UserError(f"{path} is not a readable CSV file ({err}); fix the file") from None
    if len(lines) < 2:
        raise UserError(f"{path} has no data rows; give a header row and one row per sample")
    header = [name.strip() for name in lines[0]]
    if len(set(header)) != len(header):
        raise UserError(f"{path} names a column twice in its header; give each column its own name")
    bad = next((i for i, line in enumerate(lines[1:]) if len(line) != len(header)), None)
    if bad is not None:
        raise UserError(f"row {bad + 1} of {path} has {len(lines[bad + 1])} fields, the header {len(header)}; "
                        "fix the row")
    cells = np.array(lines[1:], dtype=str)
    columns = {}
    for j, name in enumerate(header):
        values = np.char.strip(cells[:, j])
        empty = np.flatnonzero(values == "")
        columns[name] = Column(values, int(empty[0]) if len(empty) else None)
    return columns


def read_parquet(path: Path) -> dict[str, Column]:
    """A Parquet file's columns: numbers as numeric arrays, anything else (strings, dates) as text."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow: pip install 'lifelong[parquet]'") from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        reason = re.sub(r"^Could not open Parquet input source '.*?': ", "", first_line(err))
        raise UserError(f"{path} is not a readable Parquet file ({reason}); write it again") from None
    if table.num_rows == 0:
        raise UserError(f"{path} has no rows; give one row per sample")
    index = (table.schema.pandas_metadata or {}).get("index_columns", [])  # what pandas wrote with index=True
    table = table.drop_columns([n for n in index if isinstance(n, str) and re.fullmatch(r"__index_level_\d+__", n)])
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)) if column.null_count else []
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            values = column.fill_null(0).to_numpy() if column.null_count else column.to_numpy()
        else:
            try:
                text = column.cast(pa.string())
            except pa.ArrowException:
                raise UserError(f"column {name!r} of {path} has the type {kind}, which lifelong cannot read; "
                                "convert it to numbers or text") from None
            values = np.array(["" if v is None else v for v in text.to_pylist()], dtype=str)
        columns[str(name)] = Column(np.asarray(values), int(nulls[0]) if len(nulls) else None)
    return columns
