"""Cheap checks of every stage a recipe will run, made before the first stage starts.

`plan.resolve` validates each config against its types. What a stage only finds out once it has
started (a model path that is not a model directory, a data file none of whose records its reader
can use, a rollout batch that does not split into optimizer steps, `eval.ks` above `eval.n`) would
otherwise stop the recipe after the hour of stages before it. `preflight(steps)` gives every stage
kind one hook, `CHECKS[kind](cfg, made)` (a kind without one checks nothing), called for each step
that will run:

- the stage's own `TrainingStage.check` (the config rules it checks before writing anything);
- its inputs, through the same readers the stage uses, but only inputs that no earlier stage of the
  recipe writes (`made(path)` is true for those: they cannot exist yet, and the stage checks them
  itself when it starts). A data file is read only up to its first usable record, so a corpus of
  gigabytes costs one record, and a file of which no record is usable is named with the first
  reason its reader rejected a record for.

Every error names the key: `data.sources[0].path: ...`; the runner adds the recipe and the stage.
A hook may also return warnings for inputs that are allowed to be missing (a card's model that no stage
makes and that is not there: likely a typo, but shown as "not measured"); the runner prints them first.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chatforge.errors import ChatforgeError, ConfigError
from chatforge.run_dir import RejectLog

Made = Callable[[str | Path], bool]  # true for a path an earlier stage (or this one) writes


class FirstRejects(RejectLog):
    """A reject log that writes nothing and keeps the first rejected record's place and reason."""

    def __init__(self):
        super().__init__(None)
        self.first: str | None = None

    def add(self, source, where, reason, detail="", record=None) -> None:
        super().add(source, where, reason, detail, record)
        if self.first is None:
            self.first = f"{where}: {reason}" + (f" ({detail})" if detail else "")


def preflight(steps: list, where: str) -> list[str]:
    """Run the checks of every step whose action runs it; ConfigError `where: stage 'NAME': KEY: ...`.
    Returns the warnings (`where: stage 'NAME': ...`) of inputs that are allowed to be missing."""
    warnings: list[str] = []
    for index, step in enumerate(steps):
        if step.action not in ("run", "rerun", "resume"):
            continue  # a skipped or kept stage's inputs are not read again
        check = CHECKS.get(step.kind)
        if check is None:
            continue
        made = made_by([s.dir for s in steps[: index + 1]])
        try:
            warnings += [f"{where}: stage {step.name!r}: {w}" for w in check(step.cfg, made) or ()]
        except ChatforgeError as exc:
            raise ConfigError(f"{where}: stage {step.name!r}: {exc}") from None
    return warnings


def made_by(directories: list[Path]) -> Made:
    roots = [Path(d).resolve() for d in directories]

    def made(path: str | Path) -> bool:
        resolved = Path(path).resolve()
        return any(resolved == root or resolved.is_relative_to(root) for root in roots)

    return made


# --- what one input must be -------------------------------------------------------------------------


def existing(key: str, path: str | None, made: Made) -> bool:
    """True when `path` is to be checked now (given and not made by the recipe); ConfigError if it is missing."""
    if not path or made(path):
        return False
    if not Path(path).exists():
        raise ConfigError(f"{key}: not found: {path}")
    return True


def model_dir(key: str, path: str | None, made: Made) -> None:
    """A Hugging Face model directory: config.json, written to the end (atomic_dir.check_complete)."""
    from chatforge.atomic_dir import check_complete

    if not existing(key, path, made):
        return
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{key}: {path} is not a Hugging Face model directory (no config.json)")
    _as_config_error(key, lambda: check_complete(path))


def tokenizer_dir(key: str, path: str | None, made: Made, chat: bool = False) -> None:
    """A tokenizer directory (one of the files `load_tokenizer` recognises); with `chat`, one with a chat template."""
    from chatforge.tokenizer.load import TOKENIZER_MARKERS

    if not existing(key, path, made):
        return
    directory = Path(path)
    if not directory.is_dir() or not any((directory / m).is_file() for m in TOKENIZER_MARKERS):
        raise ConfigError(f"{key}: {path} is not a tokenizer directory (none of {', '.join(TOKENIZER_MARKERS)})")
    if chat and not has_chat_template(directory):
        raise ConfigError(f"{key}: the tokenizer in {path} has no chat template (this stage renders chats; use an SFT model)")


def has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    if (directory / "additional_chat_templates").is_dir():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and config.get("chat_template"))


def chat_model(cfg: Any, made: Made) -> None:
    """`model` (and `tokenizer`, else the model's own) of a stage that renders chats with a chat template."""
    model_dir("model", cfg.model, made)
    if cfg.tokenizer:
        tokenizer_dir("tokenizer", cfg.tokenizer, made, chat=True)
    else:
        tokenizer_dir("model", cfg.model, made, chat=True)


def first_usable(key: str, path: str, made: Made, read: Callable[[RejectLog], Iterator[Any]]) -> None:
    """`read(rejects)` (the stage's own reader) yields at least one record; it is read only that far."""
    if not str(path).startswith("builtin:") and not existing(key, path, made):
        return
    rejects = FirstRejects()

    def first() -> None:
        if next(iter(read(rejects)), None) is None:
            why = f"first rejected at {rejects.first}" if rejects.first else "it holds no records"
            raise ConfigError(f"no usable record in {path} ({why})")

    _as_config_error(key, first)


def _as_config_error(key: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ConfigError as exc:
        if str(exc).startswith(f"{key}:"):
            raise
        raise ConfigError(f"{key}: {exc}") from None
    except ChatforgeError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def text_sources(key: str, sources: list, made: Made) -> None:
    """Corpora of `chatforge pretrain` (text, JSONL, Parquet, dataset dirs, builtin:NAME)."""
    from chatforge.data.corpus import read_documents

    for i, source in enumerate(sources):
        first_usable(f"{key}[{i}].path", source.path, made, lambda rejects, s=source: read_documents([s], rejects))


def prompt_files(cfg: Any, made: Made, read: Callable[..., list] | None = None) -> None:
    """The prompts of a sampling stage (bon, rest, ppo, grpo, online-dpo): the first usable one of
    each source (of `data.tasks`), read by `read(source, limit, rejects)` (default `load_prompts`,
    which raises when none is usable)."""
    from chatforge.data.prompts import load_prompts

    for key, source, tasks in prompt_sources(cfg):
        path = source.path
        if not existing(key, path, made):
            continue
        if read is None:
            _as_config_error(key, lambda s=source, t=tasks: load_prompts(s, 1, FirstRejects(), t))
            continue
        rejects = FirstRejects()
        if not _as_config_error(key, lambda s=source, r=rejects: read(s, 1, r)):
            why = f"first rejected at {rejects.first}" if rejects.first else "it holds no records"
            raise ConfigError(f"{key}: no usable prompt in {path} ({why})")


def prompt_sources(cfg: Any) -> list[tuple[str, Any, list[str] | None]]:
    """(key, source, tasks) of each prompt source: `data.sources` and `data.val_sources`."""
    data, keys = cfg.data, ("sources", "val_sources")
    return [(f"data.{key}[{i}].path", source, getattr(data, "tasks", None))
            for key in keys for i, source in enumerate(getattr(data, key, None) or [])]


def scorer(key: str, cfg: Any, made: Made) -> None:
    """A scorer's own inputs: a reward model's directory, a gold world's directory, a function's import."""
    if cfg is None:
        return
    if cfg.kind == "reward_model":
        model_dir(f"{key}.path", cfg.path, made)
        tokenizer_dir(f"{key}.tokenizer" if cfg.tokenizer else f"{key}.path", cfg.tokenizer or cfg.path, made, chat=True)
    elif cfg.kind == "gold":
        existing(f"{key}.world", cfg.world, made)
    elif cfg.kind == "function":
        from chatforge.scoring.function import import_function

        _as_config_error(f"{key}.path", lambda: import_function(cfg.path))
    elif cfg.kind == "combined":
        for name, component in cfg.components.items():
            scorer(f"{key}.components.{name}", component, made)


def own_check(module_name: str, cfg: Any) -> None:
    """The stage's `TrainingStage.check`: the config rules it checks before it writes anything."""
    from chatforge.stages._training import TrainingStage

    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, TrainingStage) and value.__module__ == module_name:
            value().check(cfg)


# --- the hook of each stage kind -------------------------------------------------------------------


def _tokenizer(cfg, made: Made) -> None:
    text_sources("sources", cfg.sources, made)


def _pretrain(cfg, made: Made) -> None:
    tokenizer_dir("tokenizer", cfg.tokenizer, made)
    model_dir("model.path", cfg.model.path, made)
    if cfg.init_from and existing("init_from", cfg.init_from, made):
        directory = Path(cfg.init_from)
        if (directory / "config.json").is_file():
            model_dir("init_from", cfg.init_from, made)
        elif not (directory / "model.safetensors").is_file():
            raise ConfigError(f"init_from: {directory} is neither a Hugging Face model directory (config.json) "
                              "nor a checkpoint directory (model.safetensors)")
    text_sources("data.sources", cfg.data.sources, made)
    text_sources("data.eval_sources", cfg.data.eval_sources, made)
    if cfg.data.replay is not None:
        text_sources("data.replay.sources", cfg.data.replay.sources, made)
    for i, domain in enumerate(cfg.domains):
        if domain.texts is not None:
            text_sources(f"domains[{i}].texts", [domain.texts], made)
        if domain.knowledge is not None:
            existing(f"domains[{i}].knowledge.path", domain.knowledge.path, made)
    ewc_inputs(cfg.ewc, made)
    mixture_and_model(cfg)
    own_check("chatforge.stages.pretrain", cfg)


def mixture_and_model(cfg) -> None:
    """The data mixture's plan (source names, stage weights and starts against the LR schedule's
    phases) and a preset's `config_overrides`: what pretraining checks once its data is tokenized."""
    from chatforge.data.mixture import plan_mixture
    from chatforge.engine.schedules import phases
    from chatforge.models.presets import hf_config

    starts = {p.name: p.start for p in phases(cfg.schedule, cfg.train.max_steps)}
    plan_mixture(cfg.data.sources, cfg.data.replay, cfg.data.stages, cfg.train.max_steps, starts)
    if cfg.model.path is None and cfg.model.config_overrides:
        hf_config(cfg.model.preset, 256, {}, cfg.model.config_overrides)  # the vocabulary does not matter here


def ewc_inputs(ewc, made: Made) -> None:
    if ewc is not None:
        existing("ewc.fisher", ewc.fisher, made)
        text_sources("ewc.sources", ewc.sources, made)


def _sft(cfg, made: Made) -> None:
    from chatforge.sft.formats import read_conversations

    own_check("chatforge.stages.sft", cfg)
    chat_model(cfg, made)
    for key in ("sources", "val_sources"):
        for i, source in enumerate(getattr(cfg.data, key)):
            first_usable(f"data.{key}[{i}].path", source.path, made,
                         lambda rejects, s=source: read_conversations([s], rejects, cfg.data.system_prompts))
    if cfg.data.pretrain_mix is not None:
        text_sources("data.pretrain_mix.sources", cfg.data.pretrain_mix.sources, made)
    if cfg.eval is not None:
        existing("eval.path", cfg.eval.path, made)
    ewc_inputs(cfg.ewc, made)


def _rm(cfg, made: Made) -> None:
    from chatforge.data.records import read_records
    from chatforge.rm.data import parse_record

    own_check("chatforge.stages.rm", cfg)
    chat_model(cfg, made)
    need_gold = cfg.margin_scale is not None

    def parse(record, source, where):
        return parse_record(record, source, where, cfg.data.gold_field, need_gold)

    for key in ("sources", "val_sources"):
        for i, source in enumerate(getattr(cfg.data, key)):
            first_usable(f"data.{key}[{i}].path", source.path, made,
                         lambda rejects, s=source: read_records([s], parse, rejects))


def _dpo(cfg, made: Made) -> None:
    from chatforge.dpo.data import read_pairs

    own_check("chatforge.stages.dpo", cfg)
    chat_model(cfg, made)
    model_dir("reference", cfg.reference, made)
    for key in ("sources", "val_sources"):
        for i, source in enumerate(getattr(cfg.data, key)):
            first_usable(f"data.{key}[{i}].path", source.path, made, lambda rejects, s=source: read_pairs([s], rejects))


def _bon(cfg, made: Made) -> None:
    from chatforge.stages.bon import read_prompts

    if cfg.samples is None:  # with samples, nothing is sampled: the model is not loaded
        chat_model(cfg, made)
    else:
        existing("samples", cfg.samples, made)
    prompt_files(cfg, made, read_prompts)
    scorer("scorer", cfg.scorer, made)
    scorer("gold", cfg.gold, made)


def _rest(cfg, made: Made) -> None:
    if any(k > cfg.eval.n for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks {cfg.eval.ks} has a k above eval.n={cfg.eval.n}")
    chat_model(cfg, made)
    prompt_files(cfg, made)
    scorer("e_step.scorer", cfg.e_step.scorer, made)


def _online_rl(module_name: str, rollout_rows: bool) -> Callable[[Any, Made], None]:
    """ppo, grpo, online-dpo: the policy, its reference, the prompts, the reward and the rollout's size."""

    def check(cfg, made: Made) -> None:
        from chatforge.rl.config import check_rows

        own_check(module_name, cfg)
        if rollout_rows:  # ppo and grpo split every rollout batch into whole optimizer steps
            rows = cfg.rollout.prompts_per_rollout * cfg.rollout.samples_per_prompt
            world = int(os.environ.get("WORLD_SIZE", "1"))
            try:
                check_rows(rows, cfg.train.micro_batch_size, cfg.train.grad_accum_steps, world, "rollout")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        chat_model(cfg, made)
        model_dir("reference", cfg.reference, made)
        prompt_files(cfg, made)
        scorer("reward.scorer", cfg.reward.scorer, made)
        scorer("reward.gold", cfg.reward.gold, made)
        ptx = getattr(cfg, "ptx", None)
        if ptx is not None:
            text_sources("ptx.sources", ptx.sources, made)

    return check


def _eval(cfg, made: Made) -> None:
    cfg.check_tasks()  # greedy/n, pass@k's k <= n, a reference only for a DPO policy: once found at the task's turn
    for i, model in enumerate(cfg.models):
        model_dir(f"models[{i}]", model, made)
    tokenizer_dir("tokenizer", cfg.tokenizer, made)
    for i, task in enumerate(cfg.tasks):
        key = f"tasks[{i}]"
        if task.kind in EVAL_TASK_READERS:
            first_usable(f"{key}.path", task.path, made, lambda rejects, t=task: EVAL_TASK_READERS[t.kind](t, rejects))
        else:
            existing(f"{key}.path", getattr(task, "path", None), made)
        if isinstance(getattr(task, "data", None), list):
            text_sources(f"{key}.data", task.data, made)
        model_dir(f"{key}.reference", getattr(task, "reference", None), made)


def _generation_records(task, rejects: RejectLog) -> list:
    """The generation (or judge) task's records that ask something, through the reader its run uses."""
    from chatforge.evaluation.tasks.base import jsonl_task_records

    return jsonl_task_records(task.path, rejects, 1, asks=True)


def _reward_pairs(task, rejects: RejectLog) -> Iterator[Any]:
    """The reward_accuracy task's pairs, through the reader it uses (`read_pairs`)."""
    from chatforge.dpo.data import PairSourceConfig, read_pairs

    return read_pairs([PairSourceConfig(path=task.path, split=task.split)], rejects)


# eval task kinds whose `path` is read up to its first usable record (the others': it exists)
EVAL_TASK_READERS: dict[str, Callable[[Any, RejectLog], Any]] = {
    "generation": _generation_records,
    "judge": _generation_records,  # the judge task reads its prompts the same way
    "reward_accuracy": _reward_pairs,
}


def _eval_lm(cfg, made: Made) -> None:
    model_dir("model", cfg.model, made)
    tokenizer_dir("tokenizer", cfg.tokenizer, made)
    text_sources("data", cfg.data, made)
    text_sources("unigram_from", cfg.unigram_from, made)


def _card(cfg, made: Made) -> list[str]:
    # A model that was never made (ReST-EM that kept no sample) is a "not measured" column of the
    # card, not an error, as long as some model is there to measure; a card of nothing is a mistake.
    # A path that no stage makes and that does not exist may be a typo: said before anything runs.
    present = [m for m in cfg.models.values() if m is not None and (made(m) or Path(m).exists())]
    warnings = []
    for label, model in cfg.models.items():
        if not present or (model is not None and Path(model).exists()):
            model_dir(f"models.{label}", model, made)
        elif model is not None and not made(model):
            warnings.append(f"models.{label}: not found: {model}, and no stage makes it; its card column will read "
                            "\"not measured\"")
    model_dir("reward_model", cfg.reward_model, made)
    for key in ("world", "knowledge", "instructions", "verifiable", "pairs"):
        existing(key, getattr(cfg, key), made)
    for i, path in enumerate(cfg.text):
        existing(f"text[{i}]", path, made)
    return warnings


CHECKS: dict[str, Callable[[Any, Made], list[str] | None]] = {
    "tokenizer": _tokenizer,
    "pretrain": _pretrain,
    "sft": _sft,
    "rm": _rm,
    "dpo": _dpo,
    "bon": _bon,
    "rest": _rest,
    "grpo": _online_rl("chatforge.stages.grpo", rollout_rows=True),
    "ppo": _online_rl("chatforge.stages.ppo", rollout_rows=True),
    "online-dpo": _online_rl("chatforge.stages.online_dpo", rollout_rows=False),
    "eval": _eval,
    "eval-lm": _eval_lm,
    "card": _card,
}
