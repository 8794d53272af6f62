"""Config values are read strictly, for every field of every stage: no NaN/infinity, no booleans for
numbers or numbers for booleans, 64-bit integers, and a YAML key given twice is an error."""

from __future__ import annotations

import importlib

import annotated_types
import pytest

from chatforge.cli import STAGES
from chatforge.config.base import _scalar_kinds
from chatforge.config.load import _model_types, load_config
from chatforge.errors import ConfigError
from chatforge.stages import dpo, pretrain, rm


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=.inf", r"optim\.lr: Input should be a finite number \(got inf\)"),
        ("optim.lr=-.inf", r"optim\.lr: Input should be a finite number"),
        ("optim.lr=.nan", r"optim\.lr: Input should be a finite number"),
        ("optim.max_grad_norm=.inf", r"optim\.max_grad_norm: Input should be a finite number"),
        ("train.max_steps=true", r"train\.max_steps: a boolean where a number is expected \(got True\)"),
        ("optim.lr=false", r"optim\.lr: a boolean where a number is expected"),
        ("train.compile=1", r"train\.compile: a number where true or false is expected \(got 1\)"),
        ("train.progress='no'", r"train\.progress: a string where true or false is expected"),
        ("train.seed=99999999999999999999", r"train\.seed: beyond the 64-bit integer range"),
    ],
)
def test_bad_scalars_are_one_line_errors_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(pretrain.Config, None, [override])


def test_good_scalars_still_convert_as_before():
    cfg = load_config(pretrain.Config, None, ["optim.lr=1", "train.max_steps=1e1", "train.compile=false", "train.seed=-3"])
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.train.compile, cfg.train.seed) == (1.0, 10, False, -3)


def test_strictness_holds_in_nested_sections_of_other_stages():
    with pytest.raises(ConfigError, match=r"train\.max_steps: a boolean where a number is expected"):
        load_config(dpo.Config, None, ["train.max_steps=true"])
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be a finite number"):
        load_config(rm.Config, None, ["optim.lr=.inf"])


def test_yaml_from_a_file_is_checked_the_same_way(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: .inf\ntrain:\n  max_steps: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(pretrain.Config, path)
    lines = str(info.value).splitlines()
    assert any("c.yaml: optim.lr: Input should be a finite number" in line for line in lines)
    assert any("c.yaml: train.max_steps: a boolean where a number is expected" in line for line in lines)


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  max_steps: 3\n  save_every: 1\n  max_steps: 4\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:4:3: invalid YAML: key 'max_steps' is given twice \(first on line 2\)"):
        load_config(pretrain.Config, path)


def test_a_key_given_twice_at_the_top_level(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("optim: {lr: 0.1}\noptim: {lr: 0.2}\n")
    with pytest.raises(ConfigError, match=r"key 'optim' is given twice \(first on line 1\)"):
        load_config(pretrain.Config, path)


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("train: &t {max_steps: 3, save_every: 1}\noptim: {lr: 0.1}\n")
    assert load_config(pretrain.Config, path).train.max_steps == 3
    from chatforge.config.load import read_yaml

    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert read_yaml(path)["other"] == {"x": 1, "y": 3}


# Numeric fields that take any finite value on purpose: seeds and reward thresholds on a free scale.
UNBOUNDED_ON_PURPOSE = {
    "TrainConfig.seed", "DynamicsConfig.seed", "SamplingConfig.seed", "CombinedScorerConfig.safety_threshold",
    "EStepConfig.threshold", "EStepConfig.min_reward", "SuiteConfig.seed",
}


def _numeric_fields() -> list[tuple[str, object]]:
    seen: set[type] = set()
    found: list[tuple[str, object]] = []

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for name, field in cls.model_fields.items():
            for sub in _model_types(field.annotation):
                walk(sub)
            kinds, _ = _scalar_kinds(field.annotation)
            if int in kinds or float in kinds:
                found.append((f"{cls.__module__}.{cls.__qualname__}.{name}", field))

    for module, _ in STAGES.values():
        mod = importlib.import_module(module)
        if hasattr(mod, "Config"):
            walk(mod.Config)
    return found


def test_every_numeric_config_field_has_a_lower_bound_or_is_a_seed():
    fields = _numeric_fields()
    assert len(fields) > 100  # every stage's config was walked
    unbounded = [
        name for name, field in fields
        if not any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in field.metadata)
        and ".".join(name.split(".")[-2:]) not in UNBOUNDED_ON_PURPOSE
        and not name.endswith(".seed")
    ]
    assert unbounded == [], f"numeric config fields with no lower bound: {unbounded}"
