"""`backend: vllm`: the same `generate` contract served by vLLM's offline `LLM` engine (GPU machines).

vLLM is imported lazily; without it `ConfigError` says how to get it or to use `backend: torch`.
This adapter is written against vLLM's documented `LLM.generate` / `SamplingParams` API
(`n, temperature, top_k, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty,
max_tokens, stop, stop_token_ids, ignore_eos, seed, logprobs, logit_bias`) and
has not been run by chatforge's tests, which run on CPU machines without vLLM.

Differences from the torch backend. vLLM loads the weights itself from `model_path` (a saved
Hugging Face directory), so a model changed in memory after the `Sampler` was built must be saved
and the engine rebuilt before vLLM sees the change: online RL does that before each rollout whose
weights changed (`rl/rollout_sampler.py`).
Seeded draws differ from the torch backend's. `logprobs=0` asks vLLM for the sampled token's
log-prob, which vLLM computes from the raw model logits by default (its `logprobs_mode`), the same
quantity as the torch backend's `Completion.logprobs`.
"""

from __future__ import annotations

from chatforge.errors import ConfigError
from chatforge.sampling.completion import Completion
from chatforge.sampling.config import SamplingConfig

MISSING = "backend=vllm needs the vllm package (pip install vllm, GPU machines); use backend=torch"


class VLLMBackend:
    def __init__(self, model_path: str | None, tokenizer):
        try:
            import vllm
        except ImportError:
            raise ConfigError(MISSING) from None
        if model_path is None:
            raise ConfigError("backend=vllm loads the model from a directory: pass Sampler(..., model_path=DIR)")
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=str(model_path), tokenizer=str(model_path), seed=0)

    def generate(self, prompt_ids: list[list[int]], cfg: SamplingConfig, stop_ids: list[int]):
        from vllm import SamplingParams

        if cfg.response_format != "text":
            raise ConfigError(f"sampling.response_format {cfg.response_format} is decoded by the torch backend only; use backend=torch")

        params = SamplingParams(
            n=cfg.n,
            temperature=cfg.temperature,
            top_k=cfg.top_k if cfg.top_k > 0 else -1,
            top_p=cfg.top_p,
            max_tokens=cfg.max_new_tokens,
            stop=list(cfg.stop) or None,
            stop_token_ids=list(stop_ids),
            ignore_eos=True,  # eos stops only through stop_ids, as in the torch backend
            seed=cfg.seed,
            min_p=cfg.min_p,
            presence_penalty=cfg.presence_penalty,
            frequency_penalty=cfg.frequency_penalty,
            repetition_penalty=cfg.repetition_penalty,
            logprobs=cfg.top_logprobs,
            logit_bias=dict(cfg.logit_bias) or None,
            skip_special_tokens=True,
        )
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
        results = []
        for index, request in enumerate(outputs):
            samples = []
            for out in request.outputs:
                token_ids = list(out.token_ids)
                logprobs = [step[tok].logprob for step, tok in zip(out.logprobs or [], token_ids)]
                top = None
                if cfg.top_logprobs:  # vLLM adds the sampled token to the top k: keep the ranks 1..k
                    top = [sorted(((t, lp.logprob) for t, lp in step.items() if lp.rank <= cfg.top_logprobs),
                                  key=lambda pair: -pair[1]) for step in out.logprobs or []]
                reason = "stop" if out.finish_reason == "stop" else "length"
                samples.append(Completion(index, token_ids, out.text, logprobs, reason, out.stop_reason, top))
            results.append(samples)
        return results
