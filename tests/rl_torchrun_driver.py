"""Runs an online-RL stage under torchrun for tests/test_rl_distributed.py:

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/rl_torchrun_driver.py grpo key=value ...

It is the real stage (`chatforge.cli.main`) with two changes, both for the test's comparisons:
- each prompt's samples are drawn on their own, seeded by the rollout's seed (without the rank's offset)
  and the prompt's tokens, so one process and two draw the same samples from the same weights (the
  stage's sampler draws a rank's prompts as one batch from one generator, so a sample depends on which
  other prompts share its batch, which the split over ranks changes);
- every rank writes the weights it ends with to OUT/rank_R.safetensors, to compare the ranks' copies.
"""

from __future__ import annotations

import sys
import zlib


def per_prompt_sampling(original):
    from chatforge.rl.rollout import RANK_SEED_STRIDE

    def generate(self, prompts, cfg=None, *args, **kwargs):
        out = []
        for prompt in prompts:
            rollout_seed = (cfg.seed or 0) % RANK_SEED_STRIDE
            seed = (rollout_seed * 1_000_003 + zlib.crc32(repr(list(prompt)).encode())) % (1 << 62)
            out += original(self, [prompt], cfg.model_copy(update={"seed": seed}), *args, **kwargs)
        return out

    return generate


def each_rank_saves(original):
    def finish(self, ctx, plan, trained):
        from safetensors.torch import save_file

        from chatforge.engine.distributed import unwrap

        model = unwrap(trained.engine.model)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(ctx.run_dir.root / f"rank_{ctx.info.rank}.safetensors"))
        return original(self, ctx, plan, trained)

    return finish


def main() -> int:
    from chatforge.cli import main as cli
    from chatforge.sampling.sampler import Sampler
    from chatforge.stages._rollout import RolloutStage

    Sampler.generate = per_prompt_sampling(Sampler.generate)
    RolloutStage.finish = each_rank_saves(RolloutStage.finish)
    return cli(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
