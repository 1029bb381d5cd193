"""Pipeline YAML → typed models, with errors that point at file:line:column.

A pipeline file::

    name: demo
    execution: {scheduler: threads, workers: 2}
    stages:
      demo-data:                 # instance name; `uses:` defaults to it
        params: {num_ids: 24}
      ingest:
        params: {format: market1501}
        inputs: {source: demo-data.dataset}

Unknown keys are rejected with the nearest known key; duplicate keys are an error (PyYAML
would silently keep the last one). Each error names the file, line and column, the key path,
what was expected and what was found, and shows the offending line.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reidaug.errors import ConfigError, did_you_mean

Loc = tuple[Any, ...]


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheduler: str = Field("threads", description="threads | processes | distributed | tcp://HOST:PORT")
    workers: int | None = Field(None, ge=1, le=4096, description="parallel chunks (default: CPU count)")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        try:
            scheduler_kind(value)
        except ConfigError as e:  # one message, whichever way the value is wrong (scheduler_kind's)
            raise ValueError(str(e)) from None
        return value


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uses: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("params", "inputs", mode="before")
    @classmethod
    def _empty_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value  # `params:` with nothing after it


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    workspace: str | None = None
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    stages: dict[str, StageConfig] = Field(min_length=1)

    @field_validator("stages", mode="before")
    @classmethod
    def _empty_stage_is_default(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `ingest:` with nothing after it = all defaults
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value


@dataclasses.dataclass
class LoadedConfig:
    """A validated pipeline plus where each key came from, for later error messages."""

    config: PipelineConfig
    path: Path  # the YAML file ("<string>" for text)
    base_dir: Path
    marks: dict[Loc, tuple[int, int]]  # key path -> (line, column), 1-based
    lines: list[str]
    overrides: dict[Loc, str] = dataclasses.field(default_factory=dict)  # path -> "--set ..."

    def where(self, loc: Loc) -> str:
        return describe_location(self.path, self.marks, self.lines, loc, self.overrides)

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(f"{self.where(loc)}: {dotted(loc)}: {message}{self.snippet(loc)}")

    def snippet(self, loc: Loc) -> str:
        return _snippet(self.marks, self.lines, loc, self.overrides)


# -- YAML with positions ---------------------------------------------------------------------
class _Builder:
    """Turn a composed YAML node tree into Python values, recording each key's position."""

    def __init__(self, path: Path, lines: list[str], loader: yaml.SafeLoader) -> None:
        self.path = path
        self.lines = lines
        self.loader = loader  # one SafeLoader constructs every scalar (empty values, tags, ...)
        self.marks: dict[Loc, tuple[int, int]] = {}

    def _scalar(self, node: yaml.Node, loc: Loc) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            raise ConfigError(
                f"{self.path}:{line}:{col}: {dotted(loc)}: {e.problem}; use plain YAML values "
                f"(no custom tags){_show(self.lines, line, col)}"
            ) from None

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(
                        f"{self.path}:{line}:{col}: {dotted(loc)}: YAML merge keys (<<) are not supported; "
                        f"write the keys out{_show(self.lines, line, col)}"
                    )
                key = self._scalar(key_node, loc)
                if isinstance(key, (dict, list)):
                    raise ConfigError(f"{self.path}:{line}:{col}: {dotted(loc)}: a key must be a plain value"
                                      f"{_show(self.lines, line, col)}")
                if key in out:
                    first = self.marks.get(loc + (key,), ("?", "?"))
                    raise ConfigError(
                        f"{self.path}:{line}:{col}: {dotted(loc + (key,))}: duplicate key (first at line {first[0]}); "
                        f"remove one of them{_show(self.lines, line, col)}"
                    )
                self.marks[loc + (key,)] = (line, col)
                out[key] = self.build(value_node, loc + (key,))
                self.marks[loc + (key,)] = (line, col)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, loc + (i,)) for i, v in enumerate(node.value)]
        return self._scalar(node, loc)


#: a pipeline file is a few KB; anything this large is a mistake (or an attack on the loader)
MAX_PIPELINE_BYTES = 1 << 20
#: nesting deeper than this is refused before PyYAML's recursive composer sees it
MAX_DEPTH = 64
#: validation errors printed at most, then "and N more"
MAX_ERRORS = 20


def _scan(text: str, path: Path, lines: list[str]) -> None:
    """One linear pass over the YAML events before anything is built: refuses aliases (an alias
    bomb expands exponentially when built; pipelines need none) and nesting deeper than
    :data:`MAX_DEPTH` (PyYAML composes recursively), each at its line and column."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line, col = event.start_mark.line + 1, event.start_mark.column + 1
                raise ConfigError(f"{path}:{line}:{col}: the YAML is nested deeper than {MAX_DEPTH} levels; a "
                                  f"pipeline needs a handful{_show(lines, line, col)}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            line, col = event.start_mark.line + 1, event.start_mark.column + 1
            raise ConfigError(f"{path}:{line}:{col}: YAML aliases (*{event.anchor}) and merge keys (<<) are not "
                              f"supported; write the values out{_show(lines, line, col)}")


def load_yaml_with_marks(text: str, path: Path) -> tuple[Any, dict[Loc, tuple[int, int]], list[str]]:
    lines = text.splitlines()
    if len(text) > MAX_PIPELINE_BYTES:
        raise ConfigError(f"{path}: the pipeline file is larger than {MAX_PIPELINE_BYTES >> 20} MiB "
                          f"({len(text):,} characters); a pipeline is a few KB. Fix: check that this is the "
                          "pipeline YAML you meant")
    loader = None
    try:
        _scan(text, path, lines)
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: the file is empty; expected a mapping with 'name' and 'stages'")
        builder = _Builder(path, lines, loader)
        data = builder.build(node, ())
        return data, builder.marks, lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        if e.context_mark is not None and e.problem and "end of stream" in e.problem:
            # an unterminated quote, bracket or block runs to the end of the file: where it
            # opened is what the user must look at, not the last line
            mark = e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        opened = " that opens here and is never closed" if mark is e.context_mark else ""
        raise ConfigError(
            f"{path}:{line}:{col}: invalid YAML: {e.problem}"
            f"{' (' + e.context + opened + ')' if e.context else ''}{_show(lines, line, col)}"
        ) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, other controls)
        line, col = _line_col(text, e.position)
        raise ConfigError(f"{path}:{line}:{col}: invalid YAML: character #x{e.character:04x} is not allowed "
                          f"in YAML; remove it{_show(lines, line, col)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _line_col(text: str | bytes, index: int) -> tuple[int, int]:
    """1-based line and column of position ``index`` of ``text``."""
    newline = "\n" if isinstance(text, str) else b"\n"
    before = text[:index]
    return before.count(newline) + 1, index - (before.rfind(newline) + 1) + 1


# -- messages --------------------------------------------------------------------------------
def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(top level)"


def _nearest_mark(marks: Mapping[Loc, tuple[int, int]], loc: Loc) -> tuple[int, int] | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in marks:
            return marks[loc[:n]]
    return None


def _show(lines: list[str], line: int, col: int) -> str:
    if not (1 <= line <= len(lines)):
        return ""
    # control characters shown as U+FFFD (one column each), so the caret still points at them
    text = "".join(c if c.isprintable() or c == "\t" else "\ufffd" for c in lines[line - 1][:200])
    return f"\n  {line:>4} | {text}\n       | {' ' * max(col - 1, 0)}^"


def _snippet(marks, lines, loc, overrides) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in overrides:
            return ""
    m = _nearest_mark(marks, loc)
    return _show(lines, *m) if m else ""


def describe_location(path: Path, marks, lines, loc: Loc, overrides: Mapping[Loc, str] | None = None) -> str:
    for n in range(len(loc), 0, -1):
        if overrides and loc[:n] in overrides:
            return overrides[loc[:n]]
    m = _nearest_mark(marks, loc)
    return f"{path}:{m[0]}:{m[1]}" if m else str(path)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def format_validation_error(
    err: ValidationError, prefix: Loc, data: Any, where, snippet, fields_at=None
) -> str:
    """One readable block per pydantic error: location, key path, expected vs found, fix."""
    msgs = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        found = e.get("input")
        if e["type"] == "extra_forbidden":
            known = fields_at(tuple(e["loc"][:-1])) if fields_at else []
            hint = did_you_mean(str(e["loc"][-1]), known)
            msg = f"unknown key.{hint} Known keys here: {', '.join(sorted(known)) or '(none)'}"
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
        elif e["type"] == "value_error":
            msg = f"{e['msg'].removeprefix('Value error, ')} Found {found!r}"
        else:
            shown = repr(found) if not isinstance(found, (dict, list)) else _type_name(found)
            expected = e["msg"].lower().removeprefix("input should be ").removeprefix("value error, ")
            msg = f"expected {expected}; found {shown}"
        msgs.append(f"{where(loc)}: {dotted(loc)}: {msg}{snippet(loc)}")
        if len(msgs) == MAX_ERRORS:
            break
    more = len(err.errors()) - len(msgs)
    return "\n".join(msgs) + (f"\n... and {more} more errors" if more > 0 else "")


def _fields_of(model: type[BaseModel], sub: Loc) -> list[str]:
    """Known keys of the (nested) model at ``sub``, for "did you mean"."""
    cur: Any = model
    for part in sub:
        if getattr(cur, "__origin__", None) is dict:  # dict[str, Model]: `part` is a free key
            cur = cur.__args__[1]
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        cur = fields[part].annotation
    if getattr(cur, "__origin__", None) is dict:
        return []
    return list(getattr(cur, "model_fields", None) or {})


# -- --set overrides -------------------------------------------------------------------------
def parse_set_value(item: str, value_text: str) -> Any:
    """The VALUE of ``--set KEY=VALUE`` (the whole ``item``, for the error) read as YAML:
    ``64`` an int, ``[20, 30]`` a list, ``null`` None; an empty VALUE is the empty string."""
    try:
        return yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item}: the value is not valid YAML ({e})") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[Loc, str]:
    """Apply ``stages.NAME.params.KEY=VALUE`` (VALUE parsed as YAML) in place."""
    where: dict[Loc, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f'--set {item}: expected KEY.PATH=VALUE, e.g. "stages.ingest.params.chunk_size=64"')
        path_text, value_text = item.split("=", 1)
        parts = tuple(p for p in path_text.strip().split("."))
        if not all(parts):
            raise ConfigError(f"--set {item}: empty key in path {path_text!r}")
        value = parse_set_value(item, value_text)
        cur: Any = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(cur, dict):
                raise ConfigError(f"--set {item}: {'.'.join(parts[:i])} is not a mapping")
            if part not in cur or cur[part] is None:
                if part not in cur and parts[0] == "stages" and i == 1:
                    hint = did_you_mean(part, cur.keys())
                    raise ConfigError(
                        f"--set {item}: no stage named {part!r} in the pipeline.{hint} "
                        f"Stages: {', '.join(cur)}"
                    )
                cur[part] = {}
            cur = cur[part]
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {item}: {'.'.join(parts[:-1])} is not a mapping")
        cur[parts[-1]] = value
        where[parts] = f"--set {item}"
    return where


def load_pipeline(
    path: str | Path | None = None, *, text: str | None = None, overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> LoadedConfig:
    """Load and validate a pipeline file (stage parameters are checked by the graph builder)."""
    if text is None:
        if path is None:
            raise ValueError("load_pipeline needs a path or text")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"pipeline file not found: {path} (from {Path.cwd()}). "
                "Give the path of a pipeline YAML, e.g. configs/demo.yaml"
            )
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read pipeline file {path}: {e.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line, col = _line_col(raw, e.start)
            raise ConfigError(
                f"{path}:{line}:{col}: not UTF-8 text (byte {raw[e.start]:#04x}: {e.reason}); save the "
                "pipeline as UTF-8"
            ) from None
    path = Path(path) if path is not None else Path("<string>")
    data, marks, lines = load_yaml_with_marks(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1:1: expected a mapping with 'name' and 'stages'; found {_type_name(data)}")
    over = apply_overrides(data, list(overrides or []))

    def where(loc: Loc) -> str:
        return describe_location(path, marks, lines, loc, over)

    def snippet(loc: Loc) -> str:
        return _snippet(marks, lines, loc, over)

    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(e, (), data, where, snippet, lambda sub: _fields_of(PipelineConfig, sub))
        ) from None
    loaded = LoadedConfig(
        config=config, path=path, base_dir=(base_dir or path.parent.resolve()),
        marks=marks, lines=lines, overrides=over,
    )
    for name in config.stages:
        if not _INSTANCE.match(name):
            raise loaded.error(
                ("stages", name),
                "a stage name must be kebab-case: lowercase letters, digits and '-' (e.g. ingest-market); "
                "it names folders and is used in '<stage>.<output>' references",
            )
    return loaded


_INSTANCE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


SchedulerKind = Literal["threads", "processes", "distributed", "address"]


def scheduler_kind(value: str) -> SchedulerKind:
    if value in ("threads", "processes", "distributed", "sync"):
        return "threads" if value == "sync" else value  # type: ignore[return-value]
    if value.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        if not value.split("://", 1)[1].strip("/"):
            raise ConfigError(f"scheduler address {value!r} names no host. Expected e.g. tcp://10.0.0.5:8786 "
                              "(the address `dask scheduler` prints)")
        return "address"
    raise ConfigError(
        f"unknown scheduler {value!r}.{did_you_mean(value, ['threads', 'processes', 'distributed'])} "
        "Expected threads, processes, distributed, or a scheduler address such as tcp://10.0.0.5:8786"
    )
