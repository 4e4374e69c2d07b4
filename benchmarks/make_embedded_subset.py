"""Build the small Fashion-MNIST subset shipped in `lifelong/data/embedded/` so `lifelong run` works offline.

Takes the first 300 training and first 100 test images of each class (by original index, original order kept)
and writes them as gzip-compressed IDX files with mtime 0, so rerunning gives byte-identical output.

    python benchmarks/make_embedded_subset.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "fashion-mnist"  # the shared data beside the repository
DEFAULT_OUT = ROOT / "lifelong" / "data" / "embedded"
PER_CLASS = {"train": 300, "test": 100}
SOURCE_PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
NUM_CLASSES = 10

README = """\
# Embedded Fashion-MNIST subset

A small, class-balanced, real subset of [Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist),
shipped inside the package so that `lifelong run` (the quickstart) works offline with no download.

| file | content |
|---|---|
{table}

Made by `python benchmarks/make_embedded_subset.py` from the original `train-*-idx*-ubyte.gz` and
`t10k-*-idx*-ubyte.gz` files: the first {train} training images of each of the 10 classes and the first {test}
test images of each class, chosen by original index and kept in their original order. The files use the
original IDX format (big-endian; magic 0x00000803 for images of shape N×28×28, 0x00000801 for labels) and are
gzip-compressed with mtime 0, so rerunning the script reproduces them byte for byte.

SHA-256 of each file's decompressed content:

{hashes}

## Licence

Fashion-MNIST is released under the MIT licence:

    The MIT License (MIT) Copyright © [2017] Zalando SE, https://tech.zalando.com

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
    associated documentation files (the "Software"), to deal in the Software without restriction, including
    without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
    following conditions:

    The above copyright notice and this permission notice shall be included in all copies or substantial
    portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
    LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
    EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
    IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
    USE OR OTHER DEALINGS IN THE SOFTWARE.

Dataset by Han Xiao, Kashif Rasul and Roland Vollgraf, Zalando Research: "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747 (2017).
"""


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzip-compressed IDX file into a uint8 array, checking its magic number and size."""
    raw = gzip.decompress(path.read_bytes())
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic {found:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, found {data.size} bytes of data")
    return data.reshape(dims)


def encode_idx(array: np.ndarray, magic: int) -> bytes:
    """Encode a uint8 array as IDX bytes: magic, big-endian dimensions, then the raw data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` examples of every class, in original order."""
    chosen = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    if any(len(idx) < per_class for idx in chosen):
        raise ValueError(f"some class has fewer than {per_class} examples")
    return np.sort(np.concatenate(chosen))


def write_gzip(path: Path, content: bytes) -> None:
    """Write gzip-compressed content with mtime 0 and no file name, so the output is byte-reproducible."""
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(content)


def main() -> None:
    """Build the subset files and the README, and print each file's size and content hash."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the original .gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write the subset to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows, hashes = [], []
    for split, per_class in PER_CLASS.items():
        prefix = SOURCE_PREFIX[split]
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz", IMAGES_MAGIC)
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz", LABELS_MAGIC)
        keep = first_per_class(labels, per_class)
        for kind, array, magic in (("images", images[keep], IMAGES_MAGIC), ("labels", labels[keep], LABELS_MAGIC)):
            name = f"fmnist-subset-{split}-{kind}-idx{magic & 0xFF}-ubyte.gz"
            content = encode_idx(array, magic)
            write_gzip(args.out / name, content)
            digest = hashlib.sha256(content).hexdigest()
            size = (args.out / name).stat().st_size
            rows.append(f"| `{name}` | {split} {kind}, shape {'×'.join(map(str, array.shape))}, uint8 |")
            hashes.append(f"- `{name}`: `{digest}`")
            print(f"{name}: {size} bytes, sha256 (decompressed) {digest}")

    text = README.format(table="\n".join(rows), hashes="\n".join(hashes), **PER_CLASS)
    (args.out / "README.md").write_text(text, encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.glob("*.gz"))
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
