"""The service's own settings (docs/serve.md): defaults < a `serve:` section or --settings file < --set."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifelong.config import merge, parse_set
from lifelong.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuardSettings(Strict):
    """The canary set held out of training and the accuracy a candidate version may lose on it."""

    enabled: bool = Field(True, description="evaluate each candidate version before publishing it")
    canary_every: int = Field(10, ge=2, le=10_000, description="every Nth accepted sample of a class (the Nth, 2Nth...) joins its "
                              "canary set (never trained on)")
    canary_per_class: int = Field(50, ge=1, le=100_000, description="canary samples kept per class at most")
    min_canary: int = Field(3, ge=1, description="a class is judged once it has this many canary samples")
    max_drop: float = Field(0.1, ge=0.0, le=1.0, description="largest fall of canary accuracy on the classes the "
                            "served version knows (mean over classes) a candidate may show")


class ServeSettings(Strict):
    """How `lifelong serve` listens, learns, publishes and protects itself."""

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 exposes it to the network)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port, printed at start)")
    publish_every: int = Field(200, ge=1, description="samples learnt between candidate versions")
    publish_idle_s: float = Field(5.0, ge=0.0, description="also offer a candidate when the queue has been empty "
                                  "this long since the last sample learnt (0: only every publish_every samples)")
    batch_size: int | None = Field(None, ge=1, le=65_536, description="samples per training step (none: the run's "
                                   "train.batch_size)")
    steps_per_batch: int = Field(1, ge=1, le=1000, description="optimizer steps on each mini-batch")
    wait_ms: int = Field(200, ge=0, le=60_000, description="how long the learner waits to fill a mini-batch")
    max_batch: int = Field(256, ge=1, le=100_000, description="samples per /predict or /learn request at most")
    max_request_bytes: int = Field(16 * 2**20, ge=1024, description="request body size limit")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="images larger than this are refused before decoding")
    protect_predict: bool = Field(False, description="require the token for /predict too")
    token_env: str = Field("LIFELONG_SERVE_TOKEN", description="environment variable holding the bearer token")
    threads: int | None = Field(1, ge=1, le=1024, description="torch CPU threads (none: torch's default); one "
                                "leaves the other cores to /predict")
    switch_interval_ms: float = Field(1.0, gt=0.0, le=100.0, description="Python's thread switch interval while "
                                      "serving (the default 5 ms lets the learner thread's Python code delay a "
                                      "prediction that long at each step)")
    keep_versions: int = Field(20, ge=1, description="published versions kept on disk (older ones are deleted, "
                               "never the served one)")
    guard: GuardSettings = Field(default_factory=GuardSettings)


def build_settings(raw: dict[str, Any] | None, sets: list[str] = ()) -> ServeSettings:
    """Validate ``raw`` plus ``key=value`` overrides; a problem is one UserError line naming the key."""
    raw = dict(raw or {})
    for assignment in sets:
        merge(raw, *parse_set(assignment))
    try:
        return ServeSettings(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise UserError(f"unknown serve setting '{key}'; see docs/serve.md for the settings") from None
        raise UserError(f"invalid serve setting '{key}': {first['msg']} (got {str(first.get('input'))[:60]!r})") from None
