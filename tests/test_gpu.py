"""The GPU path, checked on the device (issue 23): bf16 vs fp32, packed isolation under the GPU
attention kernel, resume, torch.compile, the sampler, DDP with one process, the GPU recipe's start.

Skipped without CUDA. `bench/gpu_checks.sh` runs them (on a GPU: `bash bench/gpu_checks.sh`;
the same code on CPU, to know the checks themselves work: `bash bench/gpu_checks.sh --device cpu`,
which sets CHATFORGE_CHECK_DEVICE=cpu). Models are tiny Llamas: the checks are about the code path,
not speed (bench/gpu_mfu.py measures that). vLLM is not installed on the GPU machines here, so its
backend is not checked.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

import chatforge
from chatforge.data.packing import window_tensors
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.log import read_metrics
from chatforge.engine.loop import Engine
from chatforge.engine.schedules import ScheduleConfig
from chatforge.run_dir import RunDir
from chatforge.stages.pretrain import LanguageModelling
from tiny_models import make_tiny_model

DEVICE = os.environ.get("CHATFORGE_CHECK_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(),
    reason="no CUDA: run bench/gpu_checks.sh on a GPU (--device cpu runs the same checks on CPU)",
)
REPO = Path(__file__).resolve().parents[1]
VOCAB = 384
STEPS = 6


class ListBatches:
    """The engine's Batches over a fixed list (its position is the resumable state)."""

    def __init__(self, batches):
        self.batches, self.position = batches, 0

    def next_batch(self):
        batch = self.batches[self.position]
        self.position += 1
        return batch

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def packed(n: int, rows: int = 4, seq_len: int = 64, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Rows holding several random documents each, with restarting position ids (as pretraining packs)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rows):
            starts = np.cumsum([0, *rng.integers(5, 30, size=8)])
            parts.append(window_tensors(rng.integers(4, VOCAB, size=seq_len + 1), starts, 0, "isolated"))
        out.append({k: torch.from_numpy(np.stack([p[k] for p in parts])) for k in parts[0]})
    return out


def train(tmp: Path, model, batches, **overrides) -> tuple[list[float], torch.nn.Module]:
    """Losses of a short engine run (resumes from `tmp` when it holds a checkpoint) and the model."""
    stop_at = overrides.pop("stop_at", None)
    cfg = TrainConfig(max_steps=STEPS, micro_batch_size=4, device=DEVICE, eval_every=0, save_every=0,
                      progress=False, peak_tflops=1.0, **overrides)
    schedule = TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_steps": 1})
    run = RunDir.create(tmp)
    engine = Engine(model, LanguageModelling(), ListBatches(batches), cfg, OptimConfig(lr=3e-3), schedule, run,
                    name="gpu-check", stop_at=stop_at)
    engine.fit()
    return [r["loss"] for r in read_metrics(run.metrics) if "loss" in r], engine.model


@pytest.fixture(scope="module")
def base():
    return make_tiny_model(vocab_size=VOCAB, seed=0, tie_word_embeddings=False, max_position_embeddings=256)


def test_bf16_and_fp32_losses_agree(tmp_path, base):
    batches = packed(STEPS)
    fp32, _ = train(tmp_path / "fp32", copy.deepcopy(base), batches, precision="fp32")
    bf16, _ = train(tmp_path / "bf16", copy.deepcopy(base), batches, precision="bf16")
    # bf16 keeps 8 bits of mantissa: logits of ~1 round by ~4e-3, a loss of ~6 moves by a few 1e-3.
    # A loss computed from bf16-reduced logits or a dropped autocast region moves it by far more.
    assert bf16 != fp32  # the bf16 run really ran in bf16
    np.testing.assert_allclose(bf16, fp32, atol=3e-2)


def test_packed_documents_stay_apart_under_the_device_attention_kernel(base):
    from chatforge.models.logprobs import check_isolation, lm_forward

    model = copy.deepcopy(base).to(DEVICE)
    assert check_isolation(model, VOCAB) < 1e-3  # float32
    first, second = torch.arange(10, 15), torch.arange(40, 47)
    ids = torch.cat([first, second])[None].to(DEVICE)
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None].to(DEVICE)
    with torch.no_grad(), torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        together = lm_forward(model, {"input_ids": ids, "position_ids": positions})[0, 5:].float()
        alone = lm_forward(model, {"input_ids": second[None].to(DEVICE)})[0].float()
    # bf16 rounding differs between the two shapes (1e-2); a leak across documents changes logits by 1e-1.
    assert (together - alone).abs().max().item() < 2e-2


def test_resumed_run_equals_the_uninterrupted_one(tmp_path, base):
    batches = packed(STEPS, seed=1)
    straight, model_a = train(tmp_path / "a", copy.deepcopy(base), batches)
    first, _ = train(tmp_path / "b", copy.deepcopy(base), batches, stop_at=STEPS // 2)
    resumed, model_b = train(tmp_path / "b", copy.deepcopy(base), batches)
    assert len(first) == STEPS // 2 and len(resumed) == STEPS  # metrics.jsonl holds both halves
    np.testing.assert_allclose(resumed, straight, atol=1e-5)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


def test_compiled_and_eager_runs_agree(tmp_path, base):
    batches = packed(STEPS, seed=2)
    eager, _ = train(tmp_path / "eager", copy.deepcopy(base), batches)
    compiled, model = train(tmp_path / "compiled", copy.deepcopy(base), batches, compile=True)
    assert getattr(model, "_compiled_call_impl", None) is not None
    np.testing.assert_allclose(compiled, eager, atol=3e-2 if DEVICE.startswith("cuda") else 1e-4)


def test_sampler_greedy_equals_generate_on_the_device(tiny_tokenizer):
    from chatforge.sampling import Sampler, SamplingConfig

    model = make_tiny_model(vocab_size=VOCAB, seed=3, tie_word_embeddings=False).eval().to(DEVICE)
    prompts = [[40, 41, 42, 43, 44, 45, 46], [60, 61, 62]]
    got = Sampler(model, tiny_tokenizer).generate(prompts, SamplingConfig(temperature=0, max_new_tokens=12, stop_token_ids=[]))
    for prompt, completions in zip(prompts, got):
        out = model.generate(torch.tensor([prompt], device=DEVICE), do_sample=False, max_new_tokens=12,
                             pad_token_id=tiny_tokenizer.pad_token_id, top_k=None, top_p=None, temperature=None)
        assert completions[0].token_ids == out[0, len(prompt):].tolist()


def _pretrain(out: Path, tokenizer_dir: Path, corpus: Path, *extra: str, config: str | None = None) -> str:
    """`chatforge pretrain` in a subprocess on the check device; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(chatforge.__file__).resolve().parents[1]), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    args = ["pretrain", *([config] if config else []), f"out={out}", f"tokenizer={tokenizer_dir}", f"data.sources=[{{path: {corpus}}}]",
            f"data.cache_dir={out.parent / 'cache'}", f"train.device={DEVICE}", "train.progress=false",
            "train.peak_tflops=1", "train.eval_every=0", "final_eval_documents=2", *extra]
    cmd = [sys.executable, "-m", "chatforge", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"Person {i} lives in city {i % 7} and keeps a {['cat', 'dog'][i % 2]}."}) + "\n"
                            for i in range(200)))
    return path


def test_ddp_with_one_process_equals_the_plain_run(tmp_path, base):
    """The engine driving a DistributedDataParallel model (a real process group of one: nccl on CUDA,
    gloo on CPU; gradient sync hooks, no_sync over 2 accumulated micro-batches) trains like the plain model."""
    import socket

    import torch.distributed as td
    from torch.nn.parallel import DistributedDataParallel

    batches = packed(2 * STEPS, seed=3)
    plain, _ = train(tmp_path / "plain", copy.deepcopy(base), batches, grad_accum_steps=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cuda = DEVICE.startswith("cuda")
    td.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = copy.deepcopy(base).to(DEVICE)
        ddp = DistributedDataParallel(model, device_ids=[torch.device(DEVICE).index or 0] if cuda else None)
        wrapped, trained = train(tmp_path / "ddp", ddp, batches, grad_accum_steps=2)
    finally:
        td.destroy_process_group()
    assert isinstance(trained, DistributedDataParallel)
    np.testing.assert_allclose(wrapped, plain, atol=1e-5)


def test_gpu_recipe_first_steps(tmp_path, tiny_tokenizer_dir, corpus):
    """examples/gpu/pretrain_llama_125m.yaml for 3 steps (on CPU: llama-1m, 64 tokens, no compile)."""
    shrink = [] if DEVICE.startswith("cuda") else ["model.preset=llama-1m", "data.seq_len=64", "train.micro_batch_size=2",
                                                    "train.grad_accum_steps=1", "train.compile=false"]
    run = tmp_path / "recipe"
    _pretrain(run, tiny_tokenizer_dir, corpus, "train.max_steps=3", "schedule.warmup_steps=1", "train.save_every=3",
              *shrink, config=str(REPO / "examples" / "gpu" / "pretrain_llama_125m.yaml"))
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0 for r in rows)
    assert (run / "final" / "model.safetensors").is_file() and (run / "checkpoints").is_dir()
