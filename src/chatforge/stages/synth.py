"""Self-instruct: grow an instruction set from a few seed tasks with any generator.

Each request shows the generator `prompt_examples` tasks drawn from the pool (seeds and tasks kept
so far) in the seed's numbered-list template and lets it continue the list; the continuation is
parsed into tasks, which are filtered (length, words such as image/picture/link, ROUGE-L similarity
to every instruction in the pool, duplicates) and kept until `num_instructions` are kept or
`max_requests` were made. The generator is an OpenAI-compatible endpoint (`chatforge serve`,
vLLM, a hosted API: /v1/completions, or /v1/chat/completions with `chat: true`) or a local model
directory (chatforge's sampler).

    chatforge synth examples/synth/world_self_instruct.yaml

Writes <out>/alpaca.jsonl and <out>/messages.jsonl (both read by `chatforge sft`), <out>/rejected.jsonl
(every parsed task that was dropped, with the reason; every reply that held no task) and
<out>/report.json (requests, parsed, kept, drops per reason).
"""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from chatforge.clean.self_instruct import InstructionFilter, Task, parse_tasks, render_prompt
from chatforge.config.base import StrictModel
from chatforge.data.safe_json import jsonl_lines
from chatforge.errors import ChatforgeError, DataError


class GeneratorConfig(StrictModel):
    kind: Literal["openai", "local"] = Field("openai", description="openai: an OpenAI-compatible HTTP endpoint; local: a model directory")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="endpoint root (openai)")
    model: str = Field("chatforge", description="model name sent to the endpoint (openai)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: none sent)")
    chat: bool = Field(False, description="send the prompt as one user message to /chat/completions instead of /completions")
    model_dir: str | None = Field(None, description="HF model directory (local)")
    timeout_s: float = Field(300.0, gt=0)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _local_needs_dir(self) -> GeneratorConfig:
        if self.kind == "local" and not self.model_dir:
            raise ValueError("generator.kind=local needs generator.model_dir")
        return self


class Config(StrictModel):
    seeds: str = Field(description="JSONL of seed tasks: {instruction, input?, output} (Alpaca) records")
    out: str = Field("runs/synth", description="output directory")
    language: Literal["zh", "en"] = Field("en", description="prompt template and field labels: the seed's Chinese one, or English")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    num_instructions: int = Field(100, ge=1, description="stop when this many new tasks are kept")
    max_requests: int = Field(50, ge=1, description="stop after this many generator calls")
    prompt_examples: int = Field(3, ge=1, description="tasks shown in each prompt")
    list_size: int = Field(20, ge=2, description="the number of tasks the template asks for")
    min_units: int = Field(3, ge=1, description="shortest instruction, in words (a CJK character counts as one)")
    max_units: int = Field(150, ge=1, description="longest instruction")
    max_rouge: float = Field(0.7, gt=0.0, le=1.0, description="drop an instruction whose ROUGE-L F1 with any pool instruction exceeds this")
    seed: int = 0


def read_seeds(path: str) -> list[Task]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"seed tasks not found: {file}")
    tasks = []
    for number, line in jsonl_lines(file.read_text(encoding="utf-8")):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str) or not isinstance(record.get("output"), str):
            raise DataError(f"{file} line {number}: a seed task needs string fields instruction and output")
        tasks.append(Task(record["instruction"].strip(), str(record.get("input") or "").strip(), record["output"].strip()))
    if not tasks:
        raise DataError(f"{file}: no seed tasks")
    return tasks


class HttpGenerator:
    """An OpenAI-compatible endpoint over plain HTTP (one request per prompt)."""

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg

    def __call__(self, prompt: str, seed: int) -> str:
        cfg = self.cfg
        body: dict = {"model": cfg.model, "temperature": cfg.temperature, "top_p": cfg.top_p,
                      "max_tokens": cfg.max_tokens, "seed": seed}
        if cfg.chat:
            path, body["messages"] = "/chat/completions", [{"role": "user", "content": prompt}]
        else:
            path, body["prompt"] = "/completions", prompt
        headers = {"Content-Type": "application/json"}
        if os.environ.get(cfg.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[cfg.api_key_env]}"
        request = urllib.request.Request(cfg.base_url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ChatforgeError(f"generator {cfg.base_url}{path}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
        except urllib.error.URLError as exc:
            raise ChatforgeError(f"generator {cfg.base_url}{path}: {exc.reason}") from None
        choice = reply["choices"][0]
        return choice["message"]["content"] if cfg.chat else choice["text"]


class LocalGenerator:
    def __init__(self, cfg: GeneratorConfig):
        from transformers import AutoModelForCausalLM

        from chatforge.sampling import Sampler
        from chatforge.tokenizer.load import load_tokenizer

        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.model_dir)
        model = AutoModelForCausalLM.from_pretrained(cfg.model_dir).eval()
        self.sampler = Sampler(model, tokenizer, cfg.model_dir)

    def __call__(self, prompt: str, seed: int) -> str:
        from chatforge.sampling import SamplingConfig

        cfg = self.cfg
        sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_tokens, seed=seed)
        return self.sampler.generate([prompt], sampling)[0][0].text


def run(cfg: Config, generate=None) -> dict:
    """`generate(prompt, seed) -> text` replaces the configured generator (tests)."""
    seeds = read_seeds(cfg.seeds)
    if generate is None:
        generate = HttpGenerator(cfg.generator) if cfg.generator.kind == "openai" else LocalGenerator(cfg.generator)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    pool = list(seeds)
    keep = InstructionFilter([t.instruction for t in seeds], cfg.min_units, cfg.max_units, cfg.max_rouge)
    kept: list[Task] = []
    drops: Counter = Counter()
    requests = parsed = 0
    with (out / "rejected.jsonl").open("w", encoding="utf-8") as rejected:
        while len(kept) < cfg.num_instructions and requests < cfg.max_requests:
            examples = rng.sample(pool, min(cfg.prompt_examples, len(pool)))
            reply = generate(render_prompt(examples, cfg.language, cfg.list_size), cfg.seed * 100_003 + requests)
            requests += 1
            tasks, broken = parse_tasks(reply, len(examples) + 1, cfg.language)
            parsed += len(tasks)
            if broken or not tasks:
                drops["unparseable_block"] += broken or 1
                rejected.write(json.dumps({"request": requests, "reason": "unparseable", "reply": reply[:2000]}, ensure_ascii=False) + "\n")
            for task in tasks:
                reason = keep.reason(task)
                if reason is not None:
                    drops[reason] += 1
                    rejected.write(json.dumps({"request": requests, "reason": reason, **task.alpaca()}, ensure_ascii=False) + "\n")
                    continue
                keep.add(task)
                kept.append(task)
                pool.append(task)
                if len(kept) >= cfg.num_instructions:
                    break
    with (out / "alpaca.jsonl").open("w", encoding="utf-8") as alpaca, (out / "messages.jsonl").open("w", encoding="utf-8") as chats:
        for task in kept:
            alpaca.write(json.dumps(task.alpaca(), ensure_ascii=False) + "\n")
            chats.write(json.dumps(task.messages(), ensure_ascii=False) + "\n")
    report = {"requests": requests, "tasks_parsed": parsed, "kept": len(kept), "dropped": dict(drops.most_common()),
              "seeds": len(seeds)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"synth: {requests} requests, {parsed} tasks parsed, {len(kept)} kept -> {out / 'alpaca.jsonl'}, "
          f"{out / 'messages.jsonl'} | drops: {dict(drops) or 'none'}")
    return report
