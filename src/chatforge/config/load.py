"""Load a typed config from YAML plus `key.sub=value` overrides, with errors a user can act on."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from chatforge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def parse_overrides(args: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn `["optim.lr=3e-4", "--steps", "10"]` into `{"optim": {"lr": 3e-4}, "steps": 10}`.

    Values are parsed as YAML scalars/lists so `3e-4`, `true`, `[a, b]` and `null` get their types.
    """
    nested: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            arg = arg[2:]
            if "=" not in arg:
                if i + 1 >= len(args):
                    raise ConfigError(f"override --{arg} has no value")
                arg = f"{arg}={args[i + 1]}"
                i += 1
        if "=" not in arg:
            raise ConfigError(f"override {arg!r} is not of the form key.sub=value")
        key, raw = arg.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"override {args[i]!r} has an empty key")
        _set_dotted(nested, key, _parse_scalar(raw))
        i += 1
    return nested


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; users mean a number.
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    # YAML turns "" into None; an explicit empty string is more useful for paths and names.
    return "" if value is None and raw.strip() == "" else value


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is already set to a value, not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error: PyYAML keeps the
    last silently, so a config that sets `lr` twice would train with whichever came second."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges keys the mapping may override
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # an unhashable key: the base class reports it
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first})", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(
    cls: type[M],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] | dict[str, Any] = (),
) -> M:
    """Build `cls` from an optional YAML file and overrides; raise `ConfigError` naming the bad key."""
    data = read_yaml(path) if path else {}
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    merged = deep_merge(data, over)
    return validate_config(cls, merged, source=str(path) if path else None, override_keys=_dotted_keys(over))


def validate_config(
    cls: type[M], data: dict[str, Any], source: str | None = None, override_keys: set[str] | None = None
) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(cls, err, source, override_keys or set()) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, dotted + ".")
    return keys


def _format_error(cls: type[BaseModel], err: dict[str, Any], source: str | None, override_keys: set[str]) -> str:
    loc = [str(part) for part in err["loc"]]
    field_path = _field_path(cls, loc)
    dotted = ".".join(field_path) or "(top level)"
    origin = "command-line override" if dotted in override_keys else (source or "config")
    if err["type"] == "extra_forbidden":
        renamed = _renamed_at(cls, field_path[:-1], field_path[-1])
        if renamed:
            new = ".".join(field_path[:-1] + [renamed])
            inner = _inner_renames(cls, new.split("."), err.get("input"))  # a renamed section's renamed keys
            return f"{origin}: key {dotted!r} is now {new!r} (renamed; the same value goes there{inner})"
        valid = sorted(_fields_at(cls, field_path[:-1]))
        guess = difflib.get_close_matches(field_path[-1], valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join(field_path[:-1] + [guess[0]])!r}?" if guess else ""
        where = ".".join(field_path[:-1])
        choices = f" Valid keys{' under ' + repr(where) if where else ''}: {', '.join(valid)}." if valid else ""
        return f"{origin}: unknown key {dotted!r}{hint}{choices}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{origin}: {dotted}: {err['msg']}{shown}"


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (unwrapping Optional, Union, Annotated, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    if origin is typing.Annotated:
        return _model_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found += _model_types(arg)
        return found
    return []


def _field_path(cls: type[BaseModel], loc: list[str]) -> list[str]:
    """Drop pydantic's union-tag and list-index parts from `loc`, keeping the user's key path."""
    path: list[str] = []
    candidates: list[type[BaseModel]] = [cls]
    for part in loc:
        fields = {name: f for model in candidates for name, f in model.model_fields.items()}
        if part in fields:
            path.append(part)
            candidates = _model_types(fields[part].annotation)
        elif not candidates or part.isdigit() or any(_tag_matches(m, part) for m in candidates):
            continue  # a union tag or a list index
        else:
            path.append(part)  # the unknown key itself
            candidates = []
    return path


def _tag_matches(model: type[BaseModel], tag: str) -> bool:
    for f in model.model_fields.values():
        if typing.get_origin(f.annotation) is typing.Literal and tag in typing.get_args(f.annotation):
            return True
    return False


def _renamed_at(cls: type[BaseModel], path: list[str], key: str) -> str | None:
    """The new name of `key` in the section at `path`, when a section model lists it in its
    `renamed_keys` class variable ({old: new}): an old key is an error that names the new one."""
    for model in _models_at(cls, path):
        new = getattr(model, "renamed_keys", {}).get(key)
        if new:
            return new
    return None


def _inner_renames(cls: type[BaseModel], path: list[str], value: Any) -> str:
    """", with 'a' now 'b'" for the keys of `value` (the old section) that the section at `path` renames."""
    if not isinstance(value, dict):
        return ""
    pairs = [(key, _renamed_at(cls, path, key)) for key in value]
    return "".join(f", with {old!r} now {new!r}" for old, new in pairs if new)


def _models_at(cls: type[BaseModel], path: list[str]) -> list[type[BaseModel]]:
    candidates: list[type[BaseModel]] = [cls]
    for part in path:
        nxt: list[type[BaseModel]] = []
        for model in candidates:
            if part in model.model_fields:
                nxt += _model_types(model.model_fields[part].annotation)
        candidates = nxt
    return candidates


def _fields_at(cls: type[BaseModel], path: list[str]) -> set[str]:
    return {name for model in _models_at(cls, path) for name in model.model_fields}


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, every default filled in."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def describe_fields(cls: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, type and default, description) for every leaf field, for `--help`.

    The defaults shown are the ones the stage uses: inside a section whose default is an instance
    (`train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=100))`), that
    instance's values, not the section class's own defaults (`StrictModel` keeps them when a
    section is given in part).
    """
    rows: list[tuple[str, str, str]] = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        if defaults is not None:
            required, default = False, getattr(defaults, name)
        else:
            required = field.is_required()
            default = None if required else field.get_default(call_default_factory=True)
        nested = _model_types(field.annotation)
        if len(nested) == 1 and typing.get_origin(field.annotation) not in (list, dict):
            rows += describe_fields(nested[0], key + ".", default if isinstance(default, nested[0]) else None)
            continue
        type_name = _type_name(field.annotation)
        rows.append((key, f"{type_name}, {'required' if required else f'default {_short(default)}'}", field.description or ""))
    return rows


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    return text.replace("pathlib.Path", "Path")


def _short(value: Any) -> str:
    if isinstance(value, BaseModel):  # a union's default (e.g. a schedule): its kind and what it sets
        settings = ", ".join(f"{k}={v!r}" for k, v in value.model_dump(exclude_unset=True).items())
        return f"{value.__class__.__name__}({settings})"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
