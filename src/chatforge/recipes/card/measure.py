"""Measure every model of the report card on the same held-out sets, keeping each item's value so
every figure gets its standard error (stats.py).

Rows (a row is measured when its set is configured):
    knowledge accuracy        multiple choice on the C-Eval-layout knowledge test (option likelihood)
    exact match / <task>      greedy answers to held-out instructions, the world's checker, per task type
    gold reward               the world's gold reward of the same greedy answers, in [-1, 1]
    pass@k                    k of `samples` samples per verifiable prompt (unbiased estimator)
    reward accuracy           pairs: the RM's score (its own column), or a policy's implicit reward
                              beta * log(pi / pi_ref) against the reference column
    log-prob pref. accuracy   pairs: log pi(chosen) > log pi(rejected)
    bits-per-byte / <file>    held-out text, pooled over documents
    KL to <reference>         mean over sampled answers y ~ pi of log pi(y|x) - log pi_ref(y|x) (the
                              sequence-level Monte Carlo estimate of KL(pi || pi_ref), in nats)

Results go to <card dir>/models/<label>.json as each model finishes (a killed card resumes after the
last finished model) and together to <card dir>/measures.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from chatforge.errors import DataError
from chatforge.recipes.card.config import CardConfig
from chatforge.recipes.card.stats import mean_sem, proportion_sem, ratio_sem
from chatforge.run_dir import RejectLog

RM_COLUMN = "reward model"


def run(cfg: CardConfig, out: str | Path) -> dict:
    from chatforge.engine.distributed import init

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    _, device = init(cfg.device)
    reference = cfg.reference_label()
    results: dict[str, dict] = {}
    missing: dict[str, str] = {}
    with RejectLog(out / "rejected.jsonl") as rejects:
        for label, path in cfg.models.items():
            cached = out / "models" / f"{label}.json"
            if cached.is_file():
                results[label] = json.loads(cached.read_text())["measures"]
                print(f"card [{label}]: measured before ({cached})")
                continue
            if not (Path(path) / "config.json").is_file():  # e.g. ReST-EM kept no sample, so made no model
                missing[label] = f"no model directory at {path}"
                print(f"card [{label}]: not measured: {missing[label]}")
                continue
            ref_path = cfg.models[reference] if reference and label != reference else None
            results[label] = measure_model(cfg, path, ref_path, reference, str(device), rejects, label)
            _write_json(cached, {"path": path, "measures": results[label]})
        if cfg.reward_model and cfg.pairs:
            results[RM_COLUMN] = _reward_model_column(cfg, str(device), rejects)
    report = {"models": dict(cfg.models), "reference": reference, "reward_model": cfg.reward_model, "measures": results,
              "missing": missing}
    _write_json(out / "measures.json", report)
    print(f"card: {len(results)} columns measured -> {out / 'measures.json'}")
    return report


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _figure(value: float, sem: float, n: int) -> dict:
    return {"value": value, "sem": sem, "n": n}


def measure_model(cfg: CardConfig, path: str, ref_path: str | None, reference: str | None, device: str,
                  rejects: RejectLog, label: str) -> dict[str, dict]:
    from chatforge.evaluation.tasks.base import ModelContext

    ctx = ModelContext(path=path, device=device, rejects=rejects)
    measures: dict[str, dict] = {}
    torch.manual_seed(cfg.seed)
    steps = [
        (cfg.knowledge, lambda: _knowledge(cfg, ctx)),
        (cfg.instructions, lambda: _instructions(cfg, ctx, rejects)),
        (cfg.verifiable, lambda: _pass_at_k(cfg, ctx, rejects)),
        (cfg.pairs, lambda: _preferences(cfg, ctx, ref_path)),
        (cfg.text, lambda: _bits_per_byte(cfg, ctx, rejects)),
        (ref_path and (cfg.verifiable or cfg.instructions), lambda: {f"KL to {reference}": _kl(cfg, ctx, ref_path, rejects)}),
    ]
    for wanted, measure in steps:
        if wanted:
            found = measure()
            measures |= found
            shown = ", ".join(f"{k} {v['value']:.3f}" for k, v in list(found.items())[:3])
            print(f"card [{label}]: {shown}")
    ctx.release()
    return measures


def _knowledge(cfg: CardConfig, ctx) -> dict:
    from chatforge.evaluation.tasks import multiple_choice

    task = multiple_choice.MultipleChoiceTask(
        path=cfg.knowledge, shots=cfg.knowledge_shots, method="option", max_questions=cfg.knowledge_questions
    )
    result = multiple_choice.run(ctx, task)
    n = result["details"]["total"]
    p = result["metrics"]["accuracy"]
    out = {"knowledge accuracy": _figure(p, proportion_sem(p, n), n)}
    subjects = result["details"]["per_subject"]
    if len(subjects) > 1:  # e.g. world A and world B: forgetting shows on one, learning on the other
        for subject, row in subjects.items():
            out[f"knowledge accuracy / {subject}"] = _figure(row["accuracy"], proportion_sem(row["accuracy"], row["total"]), row["total"])
    return out


def _instructions(cfg: CardConfig, ctx, rejects: RejectLog) -> dict:
    from chatforge.evaluation.instructions import greedy_answers
    from chatforge.evaluation.tasks.base import read_jsonl
    from chatforge.world.reward import gold_reward_parts

    world = _world(cfg)
    records = []
    for record in read_jsonl(cfg.instructions, rejects, cfg.instructions_max):
        if isinstance(record.get("messages"), list):
            records.append(record)
        else:  # exact match needs the conversation and its reference answer, not a bare prompt
            where = record["_where"].rsplit(":", 1)[-1]
            rejects.add(str(cfg.instructions), where, "bad_field", "an instruction record needs a `messages` list", record)
    if not records:
        raise DataError(f"{cfg.instructions}: no record with a `messages` list ({rejects.summary_line()})")
    prompts = [r["messages"][:-1] for r in records]
    answers = greedy_answers(ctx.model, ctx.tokenizer, prompts, cfg.max_new_tokens, 32)
    parts = [gold_reward_parts(p, a, world) for p, a in zip(prompts, answers)]
    correct = [float(part.correctness == 1.0) for part in parts]
    out: dict[str, dict] = {}
    by_task: dict[str, list[float]] = {}
    for record, ok in zip(records, correct):
        by_task.setdefault(str(record.get("task_type") or record.get("task") or "all"), []).append(ok)
    out["exact match (all)"] = _figure(*mean_sem(correct))
    for task, values in sorted(by_task.items()):
        out[f"exact match / {task}"] = _figure(*mean_sem(values))
    out["gold reward"] = _figure(*mean_sem([float(part.total) for part in parts]))
    return out


def _world(cfg: CardConfig):
    if cfg.world is None:
        return None
    from chatforge.world.people import load_world

    return load_world(cfg.world)


def _pass_at_k(cfg: CardConfig, ctx, rejects: RejectLog) -> dict:
    from chatforge.evaluation.sampled import pass_at_k
    from chatforge.evaluation.tasks.base import prompt_of, read_jsonl
    from chatforge.sampling import Sampler, SamplingConfig, chat_prompt
    from chatforge.world.verifiable import check

    records = read_jsonl(cfg.verifiable, rejects, cfg.verifiable_max, asks=True)
    prompts = [chat_prompt(ctx.tokenizer, prompt_of(r)) for r in records]
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, n=cfg.samples, seed=cfg.seed)
    samples = Sampler(ctx.model, ctx.tokenizer).generate(prompts, sampling)
    correct = [sum(bool(check(r, c.text)) for c in row) for r, row in zip(records, samples)]
    return {
        f"pass@{k}": _figure(*mean_sem([pass_at_k(cfg.samples, c, k) for c in correct])) for k in cfg.ks
    }


def _preferences(cfg: CardConfig, ctx, ref_path: str | None) -> dict:
    from chatforge.evaluation.tasks import reward_accuracy

    task = reward_accuracy.RewardAccuracyTask(path=cfg.pairs, model_kind="dpo", reference=ref_path, max_pairs=cfg.pairs_max)
    result = reward_accuracy.run(ctx, task)
    n = result["details"]["pairs"]
    logp = result["metrics"]["logp_accuracy"]
    out = {"log-prob preference accuracy": _figure(logp, proportion_sem(logp, n), n)}
    # A model identical to its reference (e.g. RL that saw no reward signal) has every implicit reward
    # 0: all ties, which the task counts as wrong; "-" says more than an accuracy of 0.
    if ref_path is not None and result["details"]["ties"] < n:
        p = result["metrics"]["accuracy"]
        out["reward accuracy"] = _figure(p, proportion_sem(p, n), n)
    return out


def _reward_model_column(cfg: CardConfig, device: str, rejects: RejectLog) -> dict:
    from chatforge.evaluation.tasks import reward_accuracy
    from chatforge.evaluation.tasks.base import ModelContext

    ctx = ModelContext(path=cfg.reward_model, device=device, rejects=rejects)
    task = reward_accuracy.RewardAccuracyTask(path=cfg.pairs, model_kind="reward_model", max_pairs=cfg.pairs_max)
    result = reward_accuracy.run(ctx, task)
    n = result["details"]["pairs"]
    p = result["metrics"]["accuracy"]
    print(f"card [{RM_COLUMN}]: reward accuracy {p:.3f} on {n} pairs")
    return {"reward accuracy": _figure(p, proportion_sem(p, n), n)}


def _bits_per_byte(cfg: CardConfig, ctx, rejects: RejectLog) -> dict:
    from chatforge.data.corpus import SourceConfig, read_documents
    from chatforge.models.logprobs import score_texts

    out = {}
    max_len = min(512, getattr(ctx.model.config, "max_position_embeddings", 512) or 512)
    for file in cfg.text:
        texts = []
        for doc in read_documents([SourceConfig(path=file)], rejects):
            texts.append(doc.text)
            if len(texts) >= cfg.text_documents:
                break
        scored = [score_texts(ctx.model, ctx.tokenizer, [t], max_len, max_len // 2) for t in texts]
        bits = [s["nll_nats"] / math.log(2) for s in scored]
        value, sem = ratio_sem(bits, [s["bytes"] for s in scored])
        out[f"bits-per-byte / {Path(file).stem}"] = _figure(value, sem, len(texts))
    return out


def _kl(cfg: CardConfig, ctx, ref_path: str, rejects: RejectLog) -> dict:
    """Sequence-level KL(pi || pi_ref) from one sample per prompt at temperature 1 (no top-k/top-p, so
    the samples come from pi itself): the mean of log pi(y|x) - log pi_ref(y|x) over the samples."""
    from chatforge.evaluation.tasks.base import prompt_of, read_jsonl
    from chatforge.models.build import load_pretrained
    from chatforge.sampling import Sampler, SamplingConfig, chat_prompt

    source = cfg.verifiable or cfg.instructions
    records = read_jsonl(source, rejects, cfg.kl_prompts, asks=True)
    prompts = [chat_prompt(ctx.tokenizer, prompt_of(r)) for r in records]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=cfg.max_new_tokens, n=1, seed=cfg.seed + 1)
    completions = [row[0].token_ids for row in Sampler(ctx.model, ctx.tokenizer).generate(prompts, sampling)]
    reference = load_pretrained(ref_path).to(ctx.model.device).eval()
    diffs = []
    for prompt, completion in zip(prompts, completions):
        if not completion:
            continue
        diffs.append(sequence_logprob(ctx.model, prompt, completion) - sequence_logprob(reference, prompt, completion))
    del reference
    return _figure(*mean_sem(diffs))


@torch.no_grad()
def sequence_logprob(model, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt): the sum of the completion tokens' log-probabilities."""
    ids = torch.tensor([prompt + completion], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp.gather(-1, torch.tensor(completion, device=model.device)[:, None]).sum())
