"""The base of every typed config: unknown keys are errors, assignments are validated, and a section
given in part keeps the defaults its parent config sets for the rest."""

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys and validates on assignment.

    Field help lives in `Field(description=...)`; `chatforge <stage> --help` prints it.

    A nested section whose default is a config instance (`train: TrainConfig = Field(default_factory=
    lambda: TrainConfig(max_steps=100, eval_every=25))`) is the stage's default for every key of that
    section: a YAML or an override that sets only `train.max_steps` keeps `eval_every=25`, not the
    section class's own default. A section given with another `kind` (a union such as `schedule`)
    starts from that kind's defaults.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

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
