"""Request bodies → raw rows of the model's shape (JSON arrays, or PNG/JPEG images), labels and task ids.

Every problem is a ``BadInput`` naming it (a 4xx reply); rows are kept raw (uint8 pixels or float values) and
prepared later the way the run's tasks prepare theirs.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


class BadInput(ValueError):
    """A request the service refuses; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class Inputs(BaseModel):
    """A /predict body: ``inputs`` (nested arrays), ``images`` (base64 PNG/JPEG) or ``raw`` (base64 of the rows'
    bytes: uint8 pixels C×H×W, or little-endian float32 values), optional ``task``."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] | None = None
    images: list[str] | None = None
    raw: str | None = None
    task: StrictInt | None = Field(None, ge=0)


class Labelled(Inputs):
    """A /learn body: inputs and one integer label each."""

    labels: list[StrictInt]


class Shape:
    """What one raw row of the model looks like: (C, H, W) uint8 pixels, or (D, 1, 1) float values."""

    def __init__(self, shape: tuple[int, ...], dtype: str, max_image_pixels: int):
        self.shape, self.dtype, self.max_image_pixels = tuple(shape), np.dtype(dtype), max_image_pixels
        self.pixels = self.dtype == np.uint8

    def describe(self) -> str:
        c, h, w = self.shape
        if not self.pixels:
            return f"{c} float values per sample"
        return f"integer pixels 0..255 of shape [{c}, {h}, {w}]" + (f" or [{h}, {w}]" if c == 1 else f" or [{h}, {w}, {c}]")

    def arrays(self, inputs: list[Any]) -> np.ndarray:
        """Nested JSON arrays → (N, *shape) rows, checked for shape, type and range."""
        try:
            array = np.asarray(inputs)
        except (ValueError, TypeError, RecursionError):
            raise BadInput(f"inputs must be a list of equally shaped arrays: {self.describe()}") from None
        if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
            raise BadInput(f"inputs must hold numbers: {self.describe()}")
        c, h, w = self.shape
        shape = array.shape[1:]
        if shape == self.shape or (not self.pixels and shape == (c,)):
            array = array.reshape((len(array), *self.shape))
        elif self.pixels and c == 1 and shape == (h, w):
            array = array[:, None]
        elif self.pixels and shape == (h, w, c):
            array = array.transpose(0, 3, 1, 2)
        else:
            raise BadInput(f"inputs of shape {list(shape)} do not fit this model: {self.describe()}")
        if self.pixels:
            if array.dtype.kind == "f":
                raise BadInput(f"pixels must be integers 0..255, not decimals: {self.describe()}")
            if array.size and (array.min() < 0 or array.max() > 255):
                raise BadInput(f"pixels must lie in 0..255, got {array.min()}..{array.max()}")
            return array.astype(np.uint8)
        with np.errstate(over="ignore"):  # beyond float32's range becomes infinity, refused just below
            values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise BadInput("inputs must be finite float32 numbers (no NaN or infinity, magnitudes below 3.4e38)")
        return values

    def image(self, data: bytes, what: str = "the image") -> np.ndarray:
        """One PNG or JPEG file → a (C, H, W) uint8 row, converted to the model's channels and resized like an
        image folder's files."""
        c, h, w = self.shape
        if not self.pixels or c not in (1, 3):
            raise BadInput(f"this model takes {self.describe()}, not images; send them as 'inputs'")
        try:
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as image:
                if image.width * image.height > self.max_image_pixels:
                    raise BadInput(f"{what} has {image.width}×{image.height} pixels, more than the limit "
                                   f"{self.max_image_pixels}", 413)
                converted = image.convert("L" if c == 1 else "RGB")
        except BadInput:
            raise
        except Image.DecompressionBombError:  # Pillow's own limit, checked as it opens the file
            raise BadInput(f"{what} has more pixels than the limit {min(self.max_image_pixels, _pillow_limit())}",
                           413) from None
        except (OSError, ValueError, SyntaxError):
            raise BadInput(f"{what} is not a readable PNG or JPEG file") from None
        if converted.size != (w, h):
            converted = converted.resize((w, h), Image.Resampling.BILINEAR)
        pixels = np.array(converted, dtype=np.uint8)  # a writable copy
        return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)

    def raw(self, encoded: str) -> np.ndarray:
        """Base64 of N rows' bytes (uint8 pixels, or little-endian float32 values) → (N, *shape) rows."""
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("raw is not base64 text") from None
        size = int(np.prod(self.shape)) * self.dtype.itemsize
        if len(data) % size:
            raise BadInput(f"raw holds {len(data)} bytes, not a whole number of rows of {size} bytes "
                           f"({'uint8' if self.pixels else 'float32'} {list(self.shape)})")
        rows = np.frombuffer(data, self.dtype.newbyteorder("<")).reshape((-1, *self.shape)).astype(self.dtype)
        if not self.pixels and not np.isfinite(rows).all():
            raise BadInput("raw values must be finite numbers (no NaN or infinity)")
        return rows

    def images(self, encoded: list[str]) -> np.ndarray:
        rows = []
        for i, text in enumerate(encoded):
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(f"images[{i}] is not base64 text") from None
            rows.append(self.image(data, f"images[{i}]"))
        return np.stack(rows) if rows else np.zeros((0, *self.shape), np.uint8)


def parse_json(body: bytes, model: type[Inputs]) -> Inputs:
    """A JSON body validated into ``model``; one line naming the first problem otherwise."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise BadInput("the body is not valid JSON", 400) from None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadInput(f"{where}: {first['msg']}") from None


def rows_of(request: Inputs, shape: Shape, max_batch: int) -> np.ndarray:
    """The request's samples as raw rows, within the batch limit."""
    given = [name for name in ("inputs", "images", "raw") if getattr(request, name) is not None]
    if len(given) != 1:
        raise BadInput("send one of 'inputs' (arrays), 'images' (base64 PNG/JPEG) or 'raw' (base64 row bytes)")
    if request.raw is not None:
        rows = shape.raw(request.raw)
    else:
        items = request.inputs if request.inputs is not None else request.images
        if not items:
            raise BadInput("the request holds no samples")
        if len(items) > max_batch:
            raise BadInput(f"{len(items)} samples in one request; the limit is {max_batch}", 413)
        rows = shape.arrays(items) if request.inputs is not None else shape.images(items)
    if len(rows) == 0:
        raise BadInput("the request holds no samples")
    if len(rows) > max_batch:
        raise BadInput(f"{len(rows)} samples in one request; the limit is {max_batch}", 413)
    return rows


def query_int(params: Any, name: str) -> int | None:
    """An integer query parameter (``?task=1``), or None when absent."""
    text = params.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"query parameter {name} must be an integer, got {text[:40]!r}") from None
    if value < 0:
        raise BadInput(f"query parameter {name} must be 0 or more, got {value}")
    return value


def _pillow_limit() -> int:
    """The pixel count beyond which Pillow refuses to open an image (twice its warning limit)."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 2**62
