"""What PPO, GRPO and online DPO share on top of the training skeleton: the rollout buffer attached to
the model the engine trains, the held-out evaluation told the engine's step, and the RL summary and
closing line. A stage sets `self.batches` (and `self.evaluate`, or None) in `prepare`."""

from __future__ import annotations

from chatforge.stages._training import Context, Plan, Trained, TrainingStage


class RolloutStage(TrainingStage):
    title = "RL"  # names the method in the summary's plots
    batches = None
    evaluate = None

    def title_of(self, plan: Plan) -> str:
        return self.title

    def started(self, ctx: Context, plan: Plan, engine) -> None:
        from chatforge.engine import distributed as dist

        self.batches.attach(dist.unwrap(engine.model))
        if self.evaluate is not None:
            self.evaluate.step_of = lambda: engine.step

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        from chatforge.rl.setup import finish_summary

        return finish_summary(ctx, self.batches, self.evaluate, trained, f"{ctx.run_dir.root.name}: {self.title_of(plan)}")

    def closing(self, ctx: Context, summary: dict) -> str:
        from chatforge.rl.setup import closing

        return closing(ctx, summary)
