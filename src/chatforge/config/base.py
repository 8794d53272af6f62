"""The base of every typed config: unknown keys are errors, assignments are validated, and a section
given in part keeps the defaults its parent config sets for the rest.

Numbers and switches are read strictly, for every field of every config at once:
- no float field takes NaN or infinity (`optim.lr: .inf` would train to NaN weights);
- an integer or float field does not take a boolean (`max_steps: true` is not 1);
- a boolean field does not take a number or a string (`compile: 1`, `progress: "no"`);
- an integer field takes at most 64 bits (torch, numpy and the data position store int64).
"""

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

INT64_MAX = 2**63 - 1


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys and validates on assignment.

    Field help lives in `Field(description=...)`; `chatforge <stage> --help` prints it.

    A nested section whose default is a config instance (`train: TrainConfig = Field(default_factory=
    lambda: TrainConfig(max_steps=100, eval_every=25))`) is the stage's default for every key of that
    section: a YAML or an override that sets only `train.max_steps` keeps `eval_every=25`, not the
    section class's own default. A section given with another `kind` (a union such as `schedule`)
    starts from that kind's defaults.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _strict_numbers_and_switches(cls, data: Any) -> Any:
        # A model validator, not a `field_validator("*")`: pydantic refuses before-validators on the
        # `kind` fields of tagged unions. The errors keep their field path (`train.max_steps`).
        if not isinstance(data, dict):
            return data
        errors = []
        for name, field in cls.model_fields.items():
            if name in data:
                try:
                    check_scalar(data[name], field.annotation)
                except ValueError as exc:
                    errors.append(InitErrorDetails(type=PydanticCustomError("strict_scalar", str(exc)), loc=(name,),
                                                   input=data[name]))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @model_validator(mode="before")
    @classmethod
    def _sections_keep_their_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = None
        for name, field in cls.model_fields.items():
            given = data.get(name)
            if not isinstance(given, dict) or field.is_required():
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                merged = merged if merged is not None else dict(data)
                merged[name] = _with_defaults(default, given, field.annotation)
        return merged if merged is not None else data


def _with_defaults(default: BaseModel, given: dict[str, Any], annotation: Any) -> dict[str, Any]:
    """`given` on top of the keys `default` sets (recursively); given another kind of a union (e.g.
    `schedule.kind=wsd` where the default is cosine), only the keys that kind has too."""
    from chatforge.config.load import _model_types

    target = _given_kind(default, given, _model_types(annotation))
    if target is None:  # a kind the union does not have: validation names it
        return given
    preset = default.model_dump(exclude_unset=True)
    out = {k: v for k, v in preset.items() if k in target.model_fields and not (target is not type(default) and _is_tag(target, k))}
    for key, value in given.items():
        inner = getattr(default, key, None) if key in target.model_fields else None
        if isinstance(value, dict) and isinstance(inner, BaseModel):
            out[key] = _with_defaults(inner, value, target.model_fields[key].annotation)
        else:
            out[key] = value
    return out


def _is_tag(model: type[BaseModel], name: str) -> bool:
    """A one-value Literal field, such as a union member's `kind`."""
    annotation = model.model_fields[name].annotation
    return typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1


def _given_kind(default: BaseModel, given: dict[str, Any], members: list[type[BaseModel]]) -> type[BaseModel] | None:
    """The class `given` validates as: the default's, unless it names another kind (a tag field)."""
    kind = type(default)
    for name in kind.model_fields:
        if _is_tag(kind, name) and name in given and given[name] != getattr(default, name):
            matches = [m for m in members if name in m.model_fields and given[name] in typing.get_args(m.model_fields[name].annotation)]
            return matches[0] if matches else None
    return kind


def check_scalar(value: Any, annotation: Any) -> None:
    """Raise `ValueError` where pydantic's lax mode would convert `value` silently into what
    `annotation` accepts (True into 1, 1 into True); list items are checked against the item type."""
    kinds, literals = _scalar_kinds(annotation)
    numeric = int in kinds or float in kinds
    if isinstance(value, bool):
        if bool not in kinds and value not in literals and numeric:
            raise ValueError("a boolean where a number is expected")
    elif isinstance(value, int | float):
        if bool in kinds and not numeric and value not in literals:
            raise ValueError("a number where true or false is expected")
        if isinstance(value, int) and int in kinds and abs(value) > INT64_MAX:
            raise ValueError("beyond the 64-bit integer range")
    elif isinstance(value, str):
        if bool in kinds and str not in kinds and not numeric and value not in literals:
            raise ValueError("a string where true or false is expected")
    elif isinstance(value, list | tuple):
        items = _item_annotation(annotation)
        if items is not None:
            for item in value:
                check_scalar(item, items)


def _scalar_kinds(annotation: Any) -> tuple[set[type], set[Any]]:
    """The scalar types (bool, int, float, str) an annotation takes directly, and its Literal values."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        literals: set[Any] = set()
        for arg in typing.get_args(annotation):
            k, lit = _scalar_kinds(arg)
            kinds |= k
            literals |= lit
        return kinds, literals
    if origin is typing.Literal:
        return set(), set(typing.get_args(annotation))
    if annotation in (bool, int, float, str):
        return {annotation}, set()
    return set(), set()


def _item_annotation(annotation: Any) -> Any:
    """The item type of `list[X]`/`tuple[X, ...]`/`set[X]` (inside Optional), else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _item_annotation(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [a for a in map(_item_annotation, typing.get_args(annotation)) if a is not None]
        return found[0] if len(found) == 1 else None
    if origin in (list, set, frozenset) or (origin is tuple and typing.get_args(annotation)[-1:] == (Ellipsis,)):
        return typing.get_args(annotation)[0]
    return None
