"""Typed, validated run configuration: defaults < YAML file < command-line flags < `--set a.b=value`.

A method's hyperparameters live in a top-level section named after it (``ewc: {lam: 1e4}``) and are
validated by that method's own ``Params`` class; any other unknown key is an error, never silently ignored.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifelong.data.benchmarks import BENCHMARKS, default_scenario, task_count
from lifelong.data.own import source_sha256
from lifelong.errors import UserError, closest
from lifelong.loggers import LOGGERS
from lifelong.loggers.mlflow import MlflowSettings, redact
from lifelong.methods import METHODS, method_class, param_sections
from lifelong.models import MODELS


def _not_bool(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class Strict(BaseModel):
    """A config section that rejects unknown keys and re-validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Strict):
    """Your own data (docs/own-data.md): an image folder, an .npz of arrays, or a CSV or Parquet table."""

    path: str = Field(description="an image folder (ROOT/CLASS/*.png), or a .npz, .csv or .parquet file; made "
                      "absolute")
    size: Int = Field(32, gt=0, le=4096, description="image folders: every image resized to size × size")
    grey: bool = Field(False, description="image folders: grey images (1 channel) instead of colour (3)")
    skip_unreadable: bool = Field(False, description="image folders: leave unreadable files out (else an error "
                                  "lists them)")
    test_split: Float = Field(0.2, gt=0.0, lt=1.0, description="image folders and tables without a test split: the "
                              "stratified fraction of each class held out as test data (the same for every seed)")
    label_column: str = Field("label", description="tables: the column of class labels (names or integers)")
    features: list[str] | None = Field(None, description="tables: the feature columns (none = every other column)")
    task_column: str | None = Field(None, description="tables: one task per value of this column (e.g. a month)")
    task_order: list[str | int] | None = Field(None, description="tables: the task column's values in task order "
                                               "(none = sorted); rows of values not listed are left out")
    split_column: str | None = Field(None, description="tables: a column saying train or test for each row")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return os.path.abspath(os.path.expanduser(value))


class DataConfig(Strict):
    """Which benchmark (or your own data), where its files are, and how to cut it into tasks."""

    benchmark: str = "quickstart"
    data_dir: str | None = Field(None, description="made absolute, so a run resumes from any folder")
    download: bool = False
    scenario: Literal["task", "class", "domain"] | None = Field(
        None, description="task-, class- or domain-incremental; None = the benchmark's default"
    )
    num_tasks: Int | None = Field(None, gt=0, le=10_000, description="tasks for benchmarks that allow a choice")
    class_order: list[list[int]] | None = Field(None, description="classes of each task, e.g. [[1,2],[3,4]]")
    max_tasks: Int | None = Field(None, gt=0, description="keep only the first N tasks")
    train_fraction: Float = Field(1.0, gt=0.0, le=1.0, description="stratified fraction of each task's train data")
    test_fraction: Float = Field(1.0, gt=0.0, le=1.0, description="stratified fraction of each task's test data")
    validation: Float = Field(0.1, ge=0.0, lt=1.0, description="fraction of train data held out for validation")
    augment: bool = Field(False, description="random crop (pad 4) and horizontal flip on training batches")
    rgb32: bool = Field(False, description="pad images to 32×32 and repeat grey ones to 3 channels (MNIST → 3×32×32)")
    normalize: bool = Field(True, description="standardise inputs per channel with the training images' mean and "
                            "std; false feeds raw pixels in [0, 1] (e.g. van de Ven et al. 2019's MNIST protocols)")
    source: SourceConfig | None = Field(None, description="your own data instead of a named benchmark (a path, or "
                                        "a section); data.benchmark becomes 'source'")
    tasks: list[list[str | int]] | None = Field(None, description="data.source: the classes of each task, by name "
                                                "or id, e.g. [[cat, dog], [car, truck]]")
    classes_per_task: Int | None = Field(None, gt=0, description="data.source: tasks of N consecutive classes "
                                         "(default 2)")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """``data``, ``data/`` and ``./data`` name one folder: store it as one absolute path."""
        return None if value is None else os.path.abspath(os.path.expanduser(value))

    @field_validator("source", mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        """``source: my_images`` is short for ``source: {path: my_images}``."""
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _source_benchmark(cls, raw: Any) -> Any:
        """With a source, ``benchmark`` is ``source``; another named benchmark beside it is an error."""
        if isinstance(raw, dict) and raw.get("source") is not None:
            if raw.get("benchmark", "source") != "source":
                raise UserError(f"data.source and data.benchmark '{raw['benchmark']}' name two datasets; remove "
                                "data.benchmark (with a source it is 'source')")
            raw = {**raw, "benchmark": "source"}
        return raw


class ModelConfig(BaseModel):
    """The backbone; extra keys (``hidden``, ``dropout``, ``nf``...) are the backbone's own options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = "mlp"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainConfig(Strict):
    """How each task is trained."""

    epochs: Int = Field(5, gt=0, le=1_000_000)
    iterations: Int | None = Field(None, gt=0, le=10**9, description="optimizer steps per task; overrides epochs")
    batch_size: Int = Field(128, gt=0)
    eval_batch_size: Int = Field(1024, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: Float = Field(1e-3, gt=0.0, allow_inf_nan=False)
    momentum: Float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: Float = Field(0.0, ge=0.0, allow_inf_nan=False)
    reset_optimizer: bool = Field(True, description="start every task with a fresh optimizer; false carries its "
                                  "state (Adam's moments, SGD's momentum) over to the next task for the parameters "
                                  "that stay, as van de Ven et al. 2019's code does")
    online: bool = Field(False, description="a stream: each training sample is seen once, in batches of "
                         "batch_size, in stream order (epochs do not apply; iterations are refused)")
    boundaries: Literal["given", "hidden"] = Field("given", description="whether the method is told where one "
                                                   "task ends and the next begins (hidden: only with online)")
    threads: Int | None = Field(None, gt=0, le=1024, description="torch CPU threads of this run (none = torch's "
                                "default); not part of the run's identity")
    eval_every: Int | None = Field(None, gt=0, description="training samples between anytime evaluations (accuracy "
                                   "on every task seen so far); none = only after each task")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="training arithmetic: fp32, or autocast "
                                                      "to bf16 / fp16 (fp16 with loss scaling; CUDA and CPU)")
    probe: bool = Field(False, description="after each task, the linear-probe accuracy of the frozen features on "
                        "every task (docs/inspect.md); trains nothing of the method")
    unseen_outputs: Literal["masked", "trained"] = Field(
        "masked", description="class-incremental: the shared head's outputs of classes not reached yet are left out "
                              "of the loss and the predictions (masked) or trained and predicted from the first "
                              "task on (trained, as Avalanche does)")


class Config(Strict):
    """Everything that determines a run. Two runs with equal configs give identical results on CPU."""

    method: str = "naive"
    seed: Int = Field(0, ge=0, lt=2**62)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: str = "runs"
    checkpoint: Literal["epoch", "task"] = Field("epoch", description="how often a resumable checkpoint is written")
    logger: list[str] = Field(default_factory=list, description="loggers that also receive the run's records, "
                              "e.g. [tensorboard]; a name or a comma-separated string works too (none = [])")
    mlflow: MlflowSettings | None = Field(None, description="where logger mlflow sends the run (docs/tracking.md); "
                                          "not part of the run's identity")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="method sections, by method name")

    @field_validator("logger", mode="before")
    @classmethod
    def _logger_names(cls, value: Any) -> Any:
        """``none``, ``tensorboard``, ``a,b`` or a list → a list of registered logger names."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip() not in ("", "none")]
        for name in value if isinstance(value, list) else []:
            if name not in LOGGERS:
                raise UserError(f"unknown logger {name!r}; valid: none, {', '.join(LOGGERS)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _collect_method_sections(cls, raw: Any) -> Any:
        """Move top-level method sections (``ewc: {...}``) into ``params`` and validate each with its class."""
        if not isinstance(raw, dict):
            return raw
        sections = param_sections()
        raw = dict(raw)
        params = dict(raw.pop("params", None) or {})
        for key in [k for k in raw if k not in cls.model_fields]:
            if key not in sections:
                valid = sorted(set(cls.model_fields) - {"params"} | set(sections))
                close = closest(str(key), valid)
                guess = f"did you mean '{close}'? " if close else ""
                raise UserError(f"unknown config key '{key}'; {guess}valid top-level keys: {', '.join(valid)}")
            params[key] = raw.pop(key) or {}
        for name, section in params.items():
            if name not in sections:
                raise UserError(f"unknown method section '{name}'; valid: {', '.join(sorted(sections))}")
            params[name] = _validate_section(name, sections[name], section)
        raw["params"] = params
        return raw

    @model_validator(mode="after")
    def _sections_used(self) -> Config:
        """Refuse an unknown method, and a method section the configured method would ignore; a method's own
        network (``default_model``, e.g. gs-mask's gs-conv) where the config names none."""
        chosen = method_class(self.method, self.params)
        if getattr(chosen, "default_model", None) and "name" not in self.model.model_fields_set:
            self.model.name = chosen.default_model
        used = {chosen.config_section(), *chosen.extra_sections}
        if chosen.variant_of:
            used |= {METHODS[chosen.variant_of[0]].config_section(), chosen.variant_of[1]}
        for name in self.params:
            if name not in used:
                raise UserError(f"config section '{name}' is not used by method '{self.method}' (it uses: "
                                f"{', '.join(sorted(used))}); remove the section or change the method")
        return self

    def method_params(self, name: str) -> BaseModel:
        """The typed hyperparameters of section ``name`` (defaults where the config is silent)."""
        return param_sections()[name](**self.params.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, method sections at top level (the form written to config.yaml)."""
        d = self.model_dump(mode="json")
        d.update(d.pop("params"))
        if d["mlflow"] is None:  # configs that do not use it look as before it existed
            del d["mlflow"]
        return d

    def fingerprint(self) -> str:
        """A hash of everything that affects results (not the output folder or the logger).

        Keys added after the first release are hashed only when set away from their default (which reproduces
        the behaviour from before they existed), so run directories made by earlier versions stay valid.
        """
        d = affecting_results(self.to_dict())
        for section, key, default in KEYS_ADDED_LATER:
            if d[section].get(key) == default:
                del d[section][key]
        _drop_defaults(d, self)
        revision = method_class(self.method, self.params).revision
        if revision:  # a method whose results changed for the same config: its earlier run directories are stale
            d["method_revision"] = revision
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _drop_defaults(d: dict[str, Any], cfg: Config) -> None:
    """Write values that equal what an unset key means as unset, so one experiment has one fingerprint."""
    data, spec = d["data"], BENCHMARKS.get(cfg.data.benchmark)
    for key in ("source", "tasks", "classes_per_task"):  # added later: hashed only when set
        if data[key] is None:
            del data[key]
    if cfg.data.source is not None:  # the content of the user's files, and only the options set
        options = {key: field.default for key, field in SourceConfig.model_fields.items() if key != "path"}
        data["source"] = {key: value for key, value in data["source"].items()
                          if key not in options or _plain(value) != _plain(options[key])}
        data["source"]["sha256"] = source_sha256(cfg.data.source.path)
        if data.get("classes_per_task") == 2 and cfg.data.source.task_column is None:
            del data["classes_per_task"]
    if spec is not None:
        if data["scenario"] == default_scenario(cfg.data):
            data["scenario"] = None
        if spec.variable_tasks and data["num_tasks"] == spec.tasks:
            data["num_tasks"] = None
        if spec.default_order is not None and data["class_order"] == spec.default_order:
            data["class_order"] = None
        if data["max_tasks"] is not None and data["max_tasks"] == task_count(cfg.data):
            data["max_tasks"] = None
    if cfg.model.name in MODELS:
        parameters = inspect.signature(MODELS[cfg.model.name][0]).parameters
        for key in list(d["model"]):
            default = parameters[key].default if key in parameters else inspect.Parameter.empty
            if default is not inspect.Parameter.empty and _plain(d["model"][key]) == _plain(default):
                del d["model"][key]
    sections = param_sections()
    for name in cfg.params:
        defaults = {k: f.default for k, f in sections[name].model_fields.items() if f.default_factory is None}
        for key in list(d[name]):
            if key in defaults and _plain(d[name][key]) == _plain(defaults[key]):
                del d[name][key]
        selects_variant = any(m.variant_of and m.variant_of[1] == name for m in METHODS.values())
        if not d[name] and not selects_variant:
            del d[name]


def _plain(value: Any) -> Any:
    """A value as JSON sees it (tuples as lists), for comparing a config's value with a default."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def affecting_results(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that cannot change results (output folder, loggers, thread count)."""
    d = {k: v for k, v in d.items() if k not in ("out", "logger", "mlflow")}
    if isinstance(d.get("train"), dict):
        d["train"] = {k: v for k, v in d["train"].items() if k != "threads"}
    return d


def difference(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    """The keys that can change results whose values differ between two config dicts, as ``key: A → B`` (at most
    three)."""
    if not prefix:
        a, b = affecting_results(a), affecting_results(b)
    changes = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            inner = difference(x, y, f"{prefix}{key}.")
            changes += inner.split("; ") if inner else []
        elif x != y:
            changes.append(f"{prefix}{key}: {str(x)[:60]} → {str(y)[:60]}")
    return "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")


# (section, key, default) of the keys that ``Config.fingerprint`` leaves out at their default.
KEYS_ADDED_LATER: list[tuple[str, str, Any]] = [("data", "test_fraction", 1.0), ("data", "rgb32", False),
                                                ("data", "normalize", True), ("train", "reset_optimizer", True),
                                                ("train", "online", False), ("train", "boundaries", "given"),
                                                ("train", "unseen_outputs", "masked"),
                                                ("train", "eval_every", None), ("train", "probe", False),
                                                ("train", "precision", "fp32")]


def _validate_section(name: str, params_class: type[BaseModel], section: Any) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise UserError(f"config section '{name}' must be a mapping of hyperparameters, got {section!r}")
    try:
        return params_class(**section).model_dump(mode="json", exclude_unset=True)
    except ValidationError as err:
        raise UserError(_describe(err, prefix=f"{name}.", model=params_class)) from None


def _describe(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line for the first problem pydantic found, naming the key and what is expected (for a misspelt key of
    ``model``, the closest real one)."""
    first = err.errors()[0]
    key = (prefix + ".".join(str(p) for p in first["loc"])).rstrip(".")
    if first["type"] == "extra_forbidden":
        loc = first["loc"]
        section = prefix.rstrip(".") or (str(loc[0]) if len(loc) > 1 else "")
        lister = f"`lifelong list {section}` lists its keys" if section else "see `lifelong list`"
        return f"unknown config key '{key}'; {_key_hint(model, loc, prefix)} ({lister}; docs/configuration.md)"
    got = redact(repr(first.get("input")))  # no URI credentials
    return f"invalid config value for '{key}': {first['msg']} (got {got if len(got) <= 80 else got[:80] + '...'})"


def _key_hint(model: type[BaseModel] | None, loc: tuple, prefix: str) -> str:
    """For the unknown key at ``loc`` inside ``model``: the closest real key, else the section's keys when they
    are few, else a plain "check the spelling"."""
    root = model
    for part in loc[:-1]:  # down to the section
        model = _section_model(model, str(part))
    if model is None:
        return "check the spelling"
    section = prefix + "".join(f"{part}." for part in loc[:-1])
    keys = list(model.model_fields)
    close = closest(str(loc[-1]), keys)
    if close:
        return f"did you mean '{section}{close}'?"
    # the key of another section (data.eval_every for train.eval_every)
    sections = root.model_fields if root is not None and len(loc) == 2 else {}
    elsewhere = [f"{prefix}{name}.{loc[-1]}" for name in sections
                 if (other := _section_model(root, name)) is not None and str(loc[-1]) in other.model_fields]
    if elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    if not keys:
        return f"'{section.rstrip('.')}' takes no settings"
    if len(keys) <= 12:
        return f"'{section.rstrip('.')}' has {', '.join(keys)}"
    return "check the spelling"


def settings_of(name: str) -> tuple[str, dict[str, Any]] | None:
    """What a config can set under ``name``, as (title, pydantic fields by key): method ``name``'s section, another
    method section (``memory``, ``slni``) or a config section (``train``, ``data``...); None if ``name`` is none."""
    if name in METHODS:
        method = METHODS[name]
        title = f"method {name}: its settings ({method.config_section()}.KEY)"
        if method.variant_of:  # mas-slni = mas + the slni section
            title += f", beside those of {method.variant_of[0]} (`lifelong list {method.variant_of[0]}`)"
        return title, dict(method.Params.model_fields)
    sections = param_sections()
    if name in sections:
        return f"section {name} ({name}.KEY)", dict(sections[name].model_fields)
    model = _section_model(Config, name)
    if model is None:
        return None
    extra = "; the chosen model's own options: `lifelong list MODEL`" if name == "model" else ""
    return f"section {name} ({name}.KEY){extra}", dict(model.model_fields)


def _section_model(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The pydantic model of section ``key`` of ``model`` (through optional ones, ``X | None``); None if ``key``
    is not a section."""
    field = model.model_fields.get(key) if model is not None else None
    kinds = [] if field is None else [field.annotation, *get_args(field.annotation)]
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)


class _Loader(yaml.SafeLoader):
    """Safe YAML for configs: duplicate keys and binary data are errors; dates stay text (``2020-01-01``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep)

    def refuse(self, node: yaml.Node) -> None:
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag} values are not allowed", node.start_mark)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag in ("binary", "timestamp", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader.refuse)


def load_yaml(text: str) -> Any:
    """Config YAML as plain data; raises yaml.YAMLError (or ValueError for numbers too long to read)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value), the value read as YAML so numbers, lists and booleans work."""
    if "=" not in assignment:
        raise UserError(f"--set expects key=value, got '{assignment}' (example: --set train.lr=0.01)")
    key, _, text = assignment.partition("=")
    if not key.strip():
        raise UserError(f"--set '{assignment}' has an empty key (example: --set train.lr=0.01)")
    try:
        value = load_yaml(text) if text.strip() else None
    except (yaml.YAMLError, ValueError):
        value = text
    return key.strip().split("."), value


def merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at the dotted ``path`` inside the nested dict ``base``."""
    node = base
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if part == "source" and isinstance(child, str):  # the shorthand data.source=PATH is {path: PATH}
            child = node[part] = {"path": child}
        if not isinstance(child, dict):
            raise UserError(f"cannot set '{'.'.join(path)}': '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict; missing or malformed files are user errors."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file '{path}' is a folder; pass a YAML file in it to --config")
    if not path.is_file():
        raise UserError(f"config file '{path}' not found; pass an existing YAML file to --config")
    try:
        data = load_yaml(path.read_text())
    except UnicodeDecodeError:
        raise UserError(f"config file '{path}' is not UTF-8 text; pass a YAML file") from None
    except ValueError as err:
        raise UserError(f"config file '{path}' holds a value that cannot be read ({str(err)[:80]})") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        problem = getattr(err, "problem", None)
        why = f" ({problem})" if problem else ""
        raise UserError(f"config file '{path}' is not valid YAML{where}{why}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
    return data


def build_config(raw: dict[str, Any] | None = None, sets: list[str] = ()) -> Config:
    """Validate a nested dict (plus ``key=value`` overrides) into a Config, raising UserError on any problem."""
    try:
        raw = json.loads(json.dumps(raw or {}))  # deep copy; also rejects non-plain values early
    except (TypeError, ValueError, RecursionError) as err:
        raise UserError(f"the config holds a value that is not plain data ({str(err)[:80]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"a config must be a mapping of keys, got {type(raw).__name__}")
    for assignment in sets:
        merge(raw, *parse_set(assignment))
    try:
        return Config(**raw)
    except ValidationError as err:
        raise UserError(_describe(err, model=Config)) from None
