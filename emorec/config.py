"""Typed run configs: one YAML file plus `key=value` overrides. Unknown keys are errors."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emorec.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info) -> Any:
        """pydantic takes True as 1 for an int field; a boolean where a number is expected is a mistake."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kind = _number_kind(cls.model_fields[info.field_name].annotation)
            if kind:
                raise ValueError(f"expected {kind}, not a boolean (YAML reads unquoted true/false, yes/no and "
                                 "on/off as booleans)")
        return value


def _number_kind(annotation: Any) -> str | None:
    """'an integer' / 'a number' when the field takes numbers but not booleans, else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    if bool in options:
        return None
    if int in options:
        return "an integer"
    if float in options:
        return "a number"
    return None


class DataConfig(Strict):
    dataset: str = Field(description="iemocap | meld | emorynlp | dailydialog | carer | goemotions | custom")
    path: str = Field(description="directory holding the dataset's native release files")
    on_bad_row: Literal["error", "skip"] = "error"
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. validation_share")
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)


class PromptConfig(Strict):
    history: int = Field(default=12, ge=0, description="previous dialogue turns shown in the prompt")
    max_length: int = Field(default=512, ge=16, description="token budget; oldest context is dropped first")


class ModelConfig(Strict):
    name: str = Field(default="tiny-glm", description="tiny-glm, a local path or a hub id")
    family: Literal["auto", "tiny", "glm", "chatglm2", "chatglm3"] = Field(
        default="auto", description="auto: from the checkpoint's config.json (ChatGLM2/3 are converted on load)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None


class LoraConfig(Strict):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(default=None, description="default: per model family")


class PTuningConfig(Strict):
    pre_seq_len: int = Field(default=128, ge=1)
    prefix_projection: bool = False
    encoder_hidden_size: int | None = Field(default=None, ge=1)


Method = Literal["lora", "ptuning"]
METHODS: tuple[str, ...] = get_args(Method)


class MethodConfig(Strict):
    name: Method = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    ptuning: PTuningConfig = Field(default_factory=PTuningConfig)


class TrainConfig(Strict):
    deepspeed: str = Field(default="configs/deepspeed/zero2.json", description="ZeRO JSON with 'auto' fields")
    micro_batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=16, ge=1)
    lr: float | None = Field(default=None, gt=0, description="default: 2e-2 for ptuning, 5e-4 for lora")
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    max_steps: int = Field(default=3000, ge=1, description="optimizer steps")
    grad_clip: float = Field(default=1.0, ge=0)
    save_every: int = Field(default=500, ge=1)
    keep_last: int = Field(default=3, ge=1, description="complete checkpoints kept in storage")
    upload_retries: int = Field(default=5, ge=1, description="attempts per storage operation")
    upload_backoff_s: float = Field(default=0.5, ge=0, description="first retry delay; doubles each time")
    log_every: int = Field(default=10, ge=1)
    packing: bool = Field(default=False, description="pack samples into rows of pack_tokens, isolated per sample")
    pack_tokens: int = Field(default=4096, ge=64, description="token budget of one packed row")
    compile: bool = Field(default=False, description="torch.compile each decoder layer (needs packing)")
    stop_after: int | None = Field(default=None, ge=1, description="end the process after this step (tests a crash)")

    @model_validator(mode="after")
    def _compile_needs_packing(self) -> "TrainConfig":
        if self.compile and not self.packing:
            raise ValueError("train.compile needs train.packing: true (compiled layers are built for one row "
                             "length, pack_tokens)")
        return self


class EvalConfig(Strict):
    split: Literal["validation", "test"] = "test"
    batch_size: int = Field(default=8, ge=1)
    multi_label_threshold: float = Field(default=0.25, gt=0, lt=1)


class RayJobConfig(Strict):
    workers: int = Field(default=1, ge=1, description="Ray Train workers (one per GPU) for this job")
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, ge=0)
    max_failures: int = Field(default=2, ge=-1, description="worker-group restarts after a worker dies (-1: forever)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    poll_interval_s: float = Field(
        default=0.5, gt=0, le=60,
        description="how often Ray Train's controller polls its workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S); "
                    "Ray's 2 s default adds seconds to the start and the end of every job")


class RunConfig(Strict):
    name: str = "run"
    seed: int = 42
    output: str = Field(default="runs/run", description="fsspec URL or path for checkpoints and results")
    resume: str = Field(default="auto", description="auto | never | a checkpoint tag such as step-000100")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for output")
    data: DataConfig
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayJobConfig = Field(default_factory=RayJobConfig, description="used when the run goes through Ray")
    scaling_group: str | None = Field(default=None, description="set by a sweep with a ray.workers grid: jobs that "
                                      "differ only in their worker count share it, and the scaling report groups by it")

    @model_validator(mode="after")
    def _method_defaults(self) -> "RunConfig":
        if self.train.lr is None:
            self.train.lr = 2e-2 if self.method.name == "ptuning" else 5e-4
        return self

    @property
    def lr(self) -> float:
        assert self.train.lr is not None
        return self.train.lr


def _describe(model: type[BaseModel], loc: tuple) -> str:
    """The keys allowed at `loc`, so an error can say what would have been accepted."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return ""
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return ", ".join(current.model_fields)
    return ""


def _format(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _describe(model or RunConfig, e["loc"])
            lines.append(f"unknown key '{key}'" + (f" (allowed here: {allowed})" if allowed else ""))
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"key '{key}': {msg} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


# YAML: a SafeLoader that refuses what would otherwise be read silently wrong.

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(yaml.YAMLError):
    """Valid YAML that would be misread: a key given twice, a label name that YAML turns into a non-string."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key given twice (PyYAML keeps the last one silently), and
    label names (under a `labels` or `neutral` key) that YAML reads as something other than what was written."""

    root_key = ""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._keys: dict[int, str] = {}
        if self.root_key:  # an override's value: its key is on the command line, not in the YAML
            _check_label_names(self.root_key, self.root_key, node)
        _walk(node, self.root_key, self._keys, set())
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base` then a key of base: YAML's documented override, not a duplicate
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader itself reports it
                if first is not None:
                    parent = getattr(self, "_keys", {}).get(id(node), "")
                    name = f"{parent}.{key}" if parent else str(key)
                    where = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise YamlInputError(f"key '{name}' appears twice ({where}); YAML would keep only the second "
                                         "and silently drop the first: give it once")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _walk(node: yaml.Node, path: str, keys: dict[int, str], visited: set[int]) -> None:
    """Record each mapping's dotted key (for messages) and check label names, before anything is constructed."""
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys[id(node)] = path
        for key_node, value in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else str(name)
            _check_label_names(str(name), child, value)
            _walk(value, child, keys, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", keys, visited)


def _check_label_names(name: str, path: str, node: yaml.Node) -> None:
    last = name.rsplit(".", 1)[-1]
    if last == "labels" and isinstance(node, yaml.SequenceNode):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(node.value)]
    elif last == "neutral":
        items = [(path, node)]
    else:
        return
    for where, item in items:
        if not isinstance(item, yaml.ScalarNode) or item.tag == _STR_TAG:
            continue
        value = yaml.SafeLoader("").construct_object(item, deep=True)
        if not isinstance(value, (bool, type(None))) and isinstance(value, (int, float)) and str(value) == item.value:
            continue  # labels: [0, 1] mean the names "0" and "1"
        if isinstance(value, bool):
            reads = f"the boolean {value}"
        elif value is None:
            reads = "null (no value)"
        elif isinstance(value, (int, float)):
            reads = f"the number {value}"
        else:
            reads = f"a {type(value).__name__}"
        shown = item.value or "(empty)"
        raise YamlInputError(
            f"line {item.start_mark.line + 1}: {where} is {shown}, which YAML reads as {reads}, not as the label "
            f"name {item.value!r}; label names must be strings: quote it ('{item.value}')")


def _load_yaml(text: str, root_key: str = "") -> Any:
    loader = UniqueKeyLoader(text)
    loader.root_key = root_key
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = _load_yaml(raw, root_key=key) if raw else ""
    except YamlInputError as e:
        raise ConfigError(f"override {item!r}: {e}".replace("line 1: ", "")) from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _contains(value: Any, parts: tuple[str, ...]) -> bool:
    for p in parts:
        if not isinstance(value, dict) or p not in value:
            return False
        value = value[p]
    return True


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    given: dict[tuple[str, ...], tuple[str, Any]] = {}
    for item in overrides:
        parts, value = parse_override(item)
        key = tuple(parts)
        for other, (other_item, other_value) in given.items():
            name = ".".join(key)
            if other == key:
                raise ConfigError(f"override key '{name}' is given twice ({other_item!r} and {item!r}): "
                                  "give it once")
            if other[: len(key)] == key:
                raise ConfigError(f"override {item!r} replaces the whole section '{name}', dropping "
                                  f"{other_item!r} given before it: give each key once")
            if key[: len(other)] == other and _contains(other_value, key[len(other):]):
                raise ConfigError(f"override key '{name}' is given twice ({other_item!r} sets it too, and then "
                                  f"{item!r}): give it once")
        given[key] = (item, value)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def parse_options(items: list[str] | None, flag: str) -> dict:
    """Repeated `--flag key=value` options as one mapping, parsed exactly like config overrides: a dotted key nests
    (client_kwargs.endpoint_url=... is {"client_kwargs": {"endpoint_url": ...}}) and a key given twice is an error."""
    try:
        return apply_overrides({}, list(items or []))
    except ConfigError as e:
        raise ConfigError(f"{flag}: {e}".replace("override ", "")) from None


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def _decode(data: bytes, path: str) -> str:
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{path}: the file is {name} text (it starts with a {name} byte-order mark); config "
                              "files must be UTF-8: save it as UTF-8")
    if b"\x00" in data:
        raise ConfigError(f"{path}: the file contains NUL bytes (UTF-16 or UTF-32 text without a byte-order mark, "
                          "or not text at all); config files must be UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); config files must be UTF-8: "
                          "save it as UTF-8") from None


def read_yaml(path: str) -> dict:
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory (expected a YAML config file)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        raw = _load_yaml(_decode(data, path))
    except YamlInputError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return raw


def build_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None


def load_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, list(overrides))
    return build_config(raw, path or "overrides")


def resolve_repo_path(path: str) -> str:
    """Configs name shipped files relative to the repo (configs/deepspeed/zero2.json); find them anywhere."""
    p = Path(path)
    if p.exists() or p.is_absolute() or "://" in path:
        return path
    shipped = REPO_ROOT / path
    return str(shipped) if shipped.exists() else path


def dump(cfg: RunConfig) -> str:
    """The config as `emorec config` prints it: secrets redacted, like every config emorec prints or stores."""
    from emorec.io.secrets import redacted_config

    return json.dumps(redacted_config(cfg), indent=2)
