"""Best-of-N at inference: sample N_max responses per prompt once, score them, and measure best-of-N.

For each prompt the sampler draws `n_max` responses; the `scorer` (the proxy) and the `gold` scorer
score every one. For each N in 1, 2, 4, ..., n_max the expected gold reward, proxy reward and
accuracy (world verifiable records) of the sample best-of-N keeps are computed exactly from the
n_max samples (`chatforge.scoring.best_of_n`: the average over every N-subset), with the analytic
KL(best-of-N || base) = log N - (N-1)/N. Writes `bon.json`, `report/bon.png`, `samples.jsonl`
(every response and its scores), and `best.jsonl` (per prompt the best of n_max by proxy, in
messages format, for rejection-sampling fine-tuning) and, with `write_pairs`, `pairs.jsonl` (per
prompt the best vs the worst response by proxy when their scores differ by at least `min_margin`:
on-policy preference pairs for `chatforge dpo`). Prompts that cannot be read or scored go to
`rejected.jsonl` with the reason.

Sampling defaults here differ from SamplingConfig's: temperature 1.0, max_new_tokens 128, seed 0
(`--print-config` shows them); sampling.n is set to n_max. Scorer kinds (`scorer.kind`, `gold.kind`):
gold (part, world), check, function (path, batched, kwargs), reward_model (path, tokenizer,
batch_size, max_length, device, dtype), combined (rule, components, weights, safety_threshold,
normalize, ...); see docs/best_of_n.md.

    chatforge bon model=runs/sft/final data.sources=world/verifiable/test.jsonl n_max=16
    chatforge bon model=runs/sft/final data.sources=... scorer.kind=reward_model scorer.path=runs/rm/final
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.prompts import PromptSources, Sources, prompt_records, source_names
from chatforge.data.safe_json import jsonl_lines
from chatforge.errors import ChatforgeError, ConfigError, DataError
from chatforge.run_dir import RejectLog, RunDir
from chatforge.sampling.config import SamplingConfig
from chatforge.scoring.config import GoldScorerConfig, ScorerConfig

SAMPLING_DEFAULTS = {"temperature": 1.0, "max_new_tokens": 128, "seed": 0}


class PairsConfig(StrictModel):
    min_margin: float = Field(
        0.1, gt=0, description="write a prompt's pair only when best minus worst proxy score is at least this"
    )


class BonDataConfig(StrictModel):
    """The prompts sampled: `sources`, as sft, rm and dpo name their data (bon holds nothing out)."""

    sources: PromptSources = Field(
        min_length=1,
        description="prompts: [{path, split}] or one path; records with `prompt` (messages) or `messages` "
        "(a trailing assistant turn is dropped) (required)",
    )
    max_prompts: int | None = Field(100, ge=1, description="use the first N usable prompts (null: all)")


class Config(StrictModel):
    # the keys before data.sources; a config that still uses them is told the new ones
    renamed_keys: ClassVar[dict[str, str]] = {"prompts": "data.sources", "max_prompts": "data.max_prompts"}

    out: str = Field("runs/bon", description="run directory")
    model: str | None = Field(None, description="Hugging Face causal-LM directory that samples (required unless samples)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    data: BonDataConfig
    n_max: int = Field(16, ge=1, description="samples per prompt; best-of-N is measured for N = 1, 2, 4, ..., n_max")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(**SAMPLING_DEFAULTS), description="sampling settings (n is set to n_max)"
    )
    scorer: ScorerConfig = Field(default_factory=GoldScorerConfig, description="the proxy that picks the best (default gold)")
    gold: ScorerConfig = Field(default_factory=GoldScorerConfig, description="the scorer the choice is judged by")
    write_best: bool = Field(True, description="write best.jsonl: the best of n_max per prompt, messages format")
    write_pairs: PairsConfig | None = Field(
        None, description="write pairs.jsonl: per prompt the best vs the worst response by proxy, for chatforge dpo (off: null)"
    )
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, ...")
    prompts_per_call: int = Field(8, ge=1, description="prompts sampled per sampler call (progress granularity)")
    samples: str | None = Field(
        None, description="rescore the responses of an earlier run's samples.jsonl (matched by id) instead of sampling"
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.model is None and self.samples is None:
            raise ValueError("model is required (the directory that samples), unless samples=RUN/samples.jsonl is given")
        if self.sampling.n not in (1, self.n_max):
            raise ValueError(f"sampling.n={self.sampling.n}: leave it out; bon draws n_max={self.n_max} per prompt")
        return self


def read_prompts(sources: Sources, limit: int | None, rejects: RejectLog) -> list[dict[str, Any]]:
    """Records of `sources` with their prompt messages in `prompt` (other fields kept, `messages`
    removed), their file in `_source` and line in `_where`; unreadable lines and records without a
    prompt go to `rejects`."""
    from chatforge.data.parsers import prompt_messages
    from chatforge.data.records import RecordError

    def parse(record: dict, source: str, where: str) -> dict:
        messages = prompt_messages(record)
        if not all(isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise RecordError("bad_field", "every message needs a role and text content")
        out = {k: v for k, v in record.items() if k != "messages"}
        out["prompt"] = messages
        out.setdefault("id", f"{Path(source).stem}:{where.removeprefix('line ')}")
        out["_source"], out["_where"] = source, where
        return out

    return prompt_records(sources, parse, rejects, limit)


def best_of_n_table(per_prompt: list[dict[str, list[float]]], grid: list[int]) -> list[dict[str, Any]]:
    """Per N: mean over prompts of the best-of-N expectations of gold, proxy and (where known) accuracy."""
    from chatforge.scoring.best_of_n import best_of_n_kl, expected_best_of_n

    rows = []
    for n in grid:
        gold = [expected_best_of_n(p["proxy"], p["gold"], n) for p in per_prompt]
        proxy = [expected_best_of_n(p["proxy"], p["proxy"], n) for p in per_prompt]
        acc = [expected_best_of_n(p["proxy"], p["check"], n) for p in per_prompt if p.get("check") is not None]
        rows.append({
            "n": n, "kl": best_of_n_kl(n),
            "gold": _mean(gold), "gold_sem": _sem(gold), "proxy": _mean(proxy),
            "accuracy": _mean(acc) if acc else None, "accuracy_prompts": len(acc),
        })
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sem(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'N':>5} {'KL (nats)':>10} {'gold':>8} {'proxy':>8} {'accuracy':>9}"]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        lines.append(f"{r['n']:>5} {r['kl']:>10.3f} {r['gold']:>8.3f} {r['proxy']:>8.3f} {acc:>9}")
    return "\n".join(lines)


def _sample(cfg: Config, records: list[dict], rejects: RejectLog, say) -> tuple[list[dict], list[list[str]]]:
    """n_max responses per usable record (prompts the model cannot hold are rejected)."""
    from transformers import AutoModelForCausalLM

    from chatforge.sampling.sampler import Sampler, chat_prompt
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer of {cfg.tokenizer or cfg.model} has no chat template to render prompts with")
    model = AutoModelForCausalLM.from_pretrained(cfg.model, trust_remote_code=False, dtype=torch.float32)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    limit = getattr(model.config, "max_position_embeddings", None)
    kept, ids = [], []
    for record in records:
        prompt_ids = chat_prompt(tokenizer, record["prompt"])
        if limit is not None and len(prompt_ids) >= limit:
            rejects.add(record["_source"], record["_where"], "prompt_too_long", f"{len(prompt_ids)} tokens >= {limit}", record)
            continue
        kept.append(record)
        ids.append(prompt_ids)
    sampler = Sampler(model, tokenizer, model_path=cfg.model)
    sampling = cfg.sampling.model_copy(update={"n": cfg.n_max})
    texts: list[list[str]] = []
    start = time.perf_counter()
    for begin in range(0, len(ids), cfg.prompts_per_call):
        if sampling.seed is not None:  # a fresh seed per call, so calls do not replay the same random stream
            sampling = sampling.model_copy(update={"seed": cfg.sampling.seed + begin})
        out = sampler.generate(ids[begin : begin + cfg.prompts_per_call], sampling)
        texts += [[c.text for c in completions] for completions in out]
        say(f"sampled {len(texts)}/{len(ids)} prompts x {cfg.n_max} ({time.perf_counter() - start:.0f}s)")
    return kept, texts


def _earlier_samples(cfg: Config, records: list[dict], rejects: RejectLog) -> tuple[list[dict], list[list[str]]]:
    """The first n_max responses of each record in `cfg.samples` (a bon run's samples.jsonl), by id."""
    path = Path(cfg.samples)
    if not path.is_file():
        raise DataError(f"bon: samples file not found: {path}")
    by_id: dict[str, list[str]] = {}
    for lineno, line in jsonl_lines(path.read_text(encoding="utf-8")):
        try:
            row = json.loads(line)
            by_id[str(row["id"])] = [str(r) for r in row["responses"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{lineno}: not a samples.jsonl row with id and responses ({exc})") from None
    kept, texts = [], []
    for record in records:
        responses = by_id.get(str(record["id"]))
        if responses is None or len(responses) < cfg.n_max:
            found = "no row" if responses is None else f"{len(responses)} responses"
            rejects.add(record["_source"], record["_where"], "no_samples", f"{path}: {found} for n_max={cfg.n_max}", record)
            continue
        kept.append(record)
        texts.append(responses[: cfg.n_max])
    print(f"rescoring {len(kept)} prompts x {cfg.n_max} responses from {path}")
    return kept, texts


def _score(cfg: Config, records: list[dict], texts: list[list[str]], rejects: RejectLog) -> list[dict]:
    """Per usable prompt: its record, responses, and the proxy, gold and check scores of each."""
    from chatforge.scoring import build_scorer
    from chatforge.scoring.world import is_verifiable, world_correct

    proxy_scorer = build_scorer(cfg.scorer)
    same = cfg.gold.model_dump() == cfg.scorer.model_dump() and cfg.scorer.kind != "combined"
    gold_scorer = proxy_scorer if same else build_scorer(cfg.gold)
    results = []
    for record, responses in zip(records, texts):
        prompts = [record] * len(responses)
        try:
            proxy = proxy_scorer.score(prompts, responses)
            gold = proxy if same else gold_scorer.score(prompts, responses)
        except ChatforgeError as exc:
            rejects.add(record["_source"], record["_where"], "unscorable", str(exc), record)
            continue
        checked = [1.0 if world_correct(record, r) else 0.0 for r in responses] if is_verifiable(record) else None
        results.append({"record": record, "responses": responses, "proxy": proxy, "gold": gold, "check": checked})
    return results


# fields of an input record that is itself a preference pair (the world's preferences/pairs_*.jsonl):
# they describe that pair, not the one written, so pairs.jsonl drops them
_PAIR_FIELDS = ("chosen", "rejected", "kind")
_ROUNDING = 1e-9


def choose_pair(scores: list[float], responses: list[str], min_margin: float) -> tuple[int, int] | str:
    """(chosen, rejected) indices: the first of the highest-scored responses and the first of the
    lowest-scored ones; or why the prompt gives no pair: `below_margin` (best − worst < min_margin,
    e.g. every score tied; a gap short of the margin by float rounding alone, 1e-9, counts as reaching
    it: 0.5 − 0.4 is 0.0999...) or `identical_responses` (the two texts are the same)."""
    best = max(range(len(scores)), key=lambda j: scores[j])  # max/min keep the first of a tie
    worst = min(range(len(scores)), key=lambda j: scores[j])
    if scores[best] - scores[worst] < min_margin - _ROUNDING:
        return "below_margin"
    if responses[best] == responses[worst]:  # only a scorer that is not a function of the text gets here
        return "identical_responses"
    return best, worst


def pair_records(results: list[dict], min_margin: float) -> tuple[list[dict], dict[str, int]]:
    """The preference pairs of `choose_pair` in the task world's pair layout (`prompt` messages,
    `chosen`, `rejected` texts; read by `chatforge dpo`), and the count of prompts without one by reason."""
    pairs, skipped = [], {"below_margin": 0, "identical_responses": 0}
    for r in results:
        choice = choose_pair(r["proxy"], r["responses"], min_margin)
        if isinstance(choice, str):
            skipped[choice] += 1
            continue
        best, worst = choice
        record = r["record"]
        is_pair = "chosen" in record and "rejected" in record
        drop = {"prompt", "_source", "_where", *(_PAIR_FIELDS if is_pair else ())}
        out = {k: v for k, v in record.items() if k not in drop and not (is_pair and k.startswith(("chosen_", "rejected_")))}
        out.update(
            prompt=record["prompt"], chosen=r["responses"][best], rejected=r["responses"][worst],
            chosen_score=r["proxy"][best], rejected_score=r["proxy"][worst],
            chosen_gold=r["gold"][best], rejected_gold=r["gold"][worst],
        )
        pairs.append(out)
    return pairs, skipped


def _write_outputs(run_dir: RunDir, results: list[dict], write_best: bool) -> None:
    with (run_dir.root / "samples.jsonl").open("w", encoding="utf-8") as fh:
        for r in results:
            row = {"id": r["record"]["id"], "responses": r["responses"], "proxy": r["proxy"], "gold": r["gold"]}
            if r["check"] is not None:
                row["check"] = r["check"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if not write_best:
        return
    with (run_dir.root / "best.jsonl").open("w", encoding="utf-8") as fh:
        for r in results:
            best = max(range(len(r["proxy"])), key=lambda j: r["proxy"][j])  # first of tied best
            record = {k: v for k, v in r["record"].items() if k not in ("prompt", "_source", "_where")}
            record["messages"] = [*r["record"]["prompt"], {"role": "assistant", "content": r["responses"][best]}]
            record.update(proxy=r["proxy"][best], gold=r["gold"][best])
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def run(cfg: Config) -> dict:
    from chatforge.engine.plots import plot_best_of_n
    from chatforge.scoring.best_of_n import n_grid

    run_dir = RunDir.create(cfg.out)
    run_dir.write_config(cfg)
    torch.manual_seed(cfg.sampling.seed or 0)
    with RejectLog(run_dir.rejected) as rejects:
        records = read_prompts(cfg.data.sources, cfg.data.max_prompts, rejects)
        if not records:
            raise DataError(f"bon: no usable prompts in {source_names(cfg.data.sources)} ({rejects.summary_line()})")
        print(f"bon: {len(records)} prompts x {cfg.n_max} samples, proxy {cfg.scorer.kind}, gold {cfg.gold.kind}")
        start = time.perf_counter()
        if cfg.samples:
            records, texts = _earlier_samples(cfg, records, rejects)
        else:
            records, texts = _sample(cfg, records, rejects, print)
        sample_seconds = time.perf_counter() - start
        results = _score(cfg, records, texts, rejects)
        if rejects.total:
            print(rejects.summary_line())
        if not results:
            raise DataError(f"bon: no prompt could be sampled and scored ({rejects.summary_line()})")
        rows = best_of_n_table(results, n_grid(cfg.n_max))
        pairs_report = None
        if cfg.write_pairs is not None:
            pairs, skipped = pair_records(results, cfg.write_pairs.min_margin)
            with (run_dir.root / "pairs.jsonl").open("w", encoding="utf-8") as fh:
                for pair in pairs:
                    fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
            pairs_report = {"min_margin": cfg.write_pairs.min_margin, "written": len(pairs), "skipped": skipped}
            print(f"pairs.jsonl: {len(pairs)} pairs (best vs worst, margin >= {cfg.write_pairs.min_margin}); "
                  f"no pair: {skipped['below_margin']} prompts below the margin, {skipped['identical_responses']} identical")
        report = {
            "model": cfg.model, "samples": cfg.samples, "prompts_file": source_names(cfg.data.sources), "prompts": len(results),
            "n_max": cfg.n_max,
            "scorer": cfg.scorer.model_dump(mode="json"), "gold_scorer": cfg.gold.model_dump(mode="json"),
            "temperature": cfg.sampling.temperature, "sample_seconds": round(sample_seconds, 1),
            "rejected": dict(rejects.counts), "best_of_n": rows, "pairs": pairs_report,
        }
    (run_dir.root / "bon.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _write_outputs(run_dir, results, cfg.write_best)
    title = f"best-of-N: {len(results)} prompts, T={cfg.sampling.temperature}"
    plot_best_of_n(rows, run_dir.report / "bon.png", cfg.scorer.kind, cfg.gold.kind, title)
    run_dir.write_summary({"prompts": len(results), "n_max": cfg.n_max, "rejected": dict(rejects.counts),
                           "best_of_n": rows, "pairs": pairs_report})
    print(format_table(rows))
    print(f"done: {run_dir.root / 'bon.json'} | {run_dir.report / 'bon.png'} | {len(results)} prompts, {rejects.total} rejected")
    return report
