"""Training rows drawn from several sources: mixture weights, staged mixtures and replay.

Each source is a token stream (one token cache) cut into windows of `seq_len + 1` tokens with stride
`seq_len`; a source visits its windows in a fresh seeded permutation every epoch, independently of
the other sources. Row number `g` of the run (counted over all ranks and micro-batches) draws its
source from the mixture in force at its optimizer step, by a uniform number that depends only on
(seed, g); it then takes that source's next window. So the rows of a step do not depend on the
micro-batch size, the accumulation steps or the number of ranks, and the state is a row counter
plus one counter per source.

Weights are GPT-3-style sampling weights: the expected share of rows (= of tokens, rows being
equally long) each source gets, whatever its size; a small source repeats (more epochs), a large one
is subsampled. `data.stages` switches the weights at given steps (fast-convergence / stable /
anneal, with high-quality or SFT data in the anneal stage). `data.replay` mixes a fixed fraction of
rows from an old corpus into every stage, against forgetting in continued pretraining.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.data.packing import Packing, window_tensors
from chatforge.errors import ConfigError, DataError

_SOURCE_DRAW = 0x6D6978  # separates the source-choice stream from the window-order streams


class ReplayConfig(StrictModel):
    sources: list[SourceConfig] = Field(description="the old corpus (e.g. the data the base model was trained on)")
    fraction: float = Field(0.05, gt=0, lt=1, description="share of every batch drawn from the old corpus")


class MixtureStage(StrictModel):
    name: str = Field(description="label in logs and plots, e.g. fast, stable, anneal")
    start_step: int | None = Field(None, ge=0, description="first optimizer step of this stage")
    start_fraction: float | None = Field(None, ge=0, lt=1, description="...or its start as a fraction of max_steps")
    start_phase: str | None = Field(
        None, description="...or the LR schedule phase it starts with (e.g. decay for wsd, anneal for infinite)"
    )
    weights: dict[str, float] = Field(description="source name -> sampling weight (sources not named get 0)")

    @model_validator(mode="after")
    def _one_start(self) -> MixtureStage:
        given = [k for k in ("start_step", "start_fraction", "start_phase") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"stage {self.name!r}: give one of start_step, start_fraction, start_phase (got {given})")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"stage {self.name!r}: weights must be >= 0 with at least one > 0")
        return self


def source_name(source: SourceConfig) -> str:
    if source.name:
        return source.name
    path = source.path.split(":", 1)[1] if source.path.startswith("builtin:") else source.path
    return path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] or source.path


@dataclass(frozen=True)
class StagePlan:
    """The mixture in force at each optimizer step: sorted (start step, name, weights over sources)."""

    names: list[str]  # source names, in order of the weight vectors
    stages: list[tuple[int, str, np.ndarray]]

    def at(self, step: int) -> tuple[str, np.ndarray]:
        current = self.stages[0]
        for stage in self.stages:
            if step >= stage[0]:
                current = stage
        return current[1], current[2]

    def expected_rows(self, max_steps: int, rows_per_step: int) -> np.ndarray:
        """Rows each source is expected to give over the run (shares x rows of each stage)."""
        bounds = [start for start, _, _ in self.stages] + [max_steps]
        return sum(
            (end - start) * rows_per_step * weights for (start, _, weights), end in zip(self.stages, bounds[1:])
        )

    def describe(self) -> list[str]:
        lines = []
        for start, name, weights in self.stages:
            shares = ", ".join(f"{n} {w:.1%}" for n, w in zip(self.names, weights) if w > 0)
            lines.append(f"from step {start}: {name}: {shares}")
        return lines


def plan_mixture(
    sources: list[SourceConfig],
    replay: ReplayConfig | None,
    stages: list[MixtureStage],
    max_steps: int,
    phase_starts: dict[str, int] | None = None,
) -> StagePlan:
    """Resolve weights, stages and replay into normalized per-step shares (checked, with clear errors)."""
    main = [source_name(s) for s in sources]
    old = [source_name(s) for s in replay.sources] if replay else []
    names = main + old
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"data sources share the name(s) {duplicates}; give each source a distinct `name:` (stages and logs use it)"
        )
    stage_list = stages or [MixtureStage(name="main", weights={n: s.weight for n, s in zip(main, sources)})]
    resolved = []
    for i, stage in enumerate(stage_list):
        for key in stage.weights:
            if key not in main:
                hint = difflib.get_close_matches(key, main, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                where = "a replay source: replay.fraction sets its share" if key in old else "not a data source"
                raise ConfigError(f"data.stages[{i}] ({stage.name}): weight for {key!r}, {where}{extra} (sources: {main})")
        start = _stage_start(stage, i, max_steps, phase_starts or {})
        weights = np.array([stage.weights.get(n, 0.0) for n in main], dtype=np.float64)
        weights = weights / weights.sum()
        if replay:
            old_weights = np.array([s.weight for s in replay.sources], dtype=np.float64)
            weights = np.concatenate([weights * (1 - replay.fraction), old_weights / old_weights.sum() * replay.fraction])
        resolved.append((start, stage.name, weights))
    starts = [s for s, _, _ in resolved]
    late = [(name, start) for start, name, _ in resolved if start >= max_steps]
    if late:
        raise ConfigError(f"data.stages: {late[0][0]} starts at step {late[0][1]}, at or after max_steps={max_steps}, so it would never run")
    if starts[0] != 0:
        raise ConfigError(f"data.stages[0] ({resolved[0][1]}) must start at step 0, not {starts[0]}")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise ConfigError(f"data.stages must start at increasing steps; they start at {starts} (max_steps {max_steps})")
    return StagePlan(names, resolved)


def _stage_start(stage: MixtureStage, index: int, max_steps: int, phase_starts: dict[str, int]) -> int:
    if stage.start_step is not None:
        return stage.start_step
    if stage.start_fraction is not None:
        return int(round(stage.start_fraction * max_steps))
    if stage.start_phase is not None:
        if stage.start_phase not in phase_starts:
            raise ConfigError(
                f"data.stages[{index}] ({stage.name}): start_phase {stage.start_phase!r} is not a phase of the LR "
                f"schedule; its phases are {list(phase_starts)}"
            )
        return phase_starts[stage.start_phase]
    if index == 0:
        return 0
    raise ConfigError(f"data.stages[{index}] ({stage.name}): give start_step, start_fraction or start_phase")


class SourceWindows:
    """Window number n of one source: epoch n // num_windows, in that epoch's seeded permutation."""

    def __init__(self, name: str, tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int, seed: int, index: int):
        self.name, self.tokens, self.doc_starts, self.seq_len = name, tokens, doc_starts, seq_len
        self.seed, self.index = seed, index
        self.num_windows = (len(tokens) - 1) // seq_len if len(tokens) > 1 else 0
        if self.num_windows == 0:
            raise DataError(f"source {name!r} has {len(tokens)} training tokens, fewer than one sequence of {seq_len + 1}")
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, self.index, epoch]).permutation(self.num_windows)
        return self._order

    def window(self, n: int, packing: Packing) -> dict[str, np.ndarray]:
        epoch, k = divmod(n, self.num_windows)
        start = int(self.order(epoch)[k]) * self.seq_len
        chunk = np.asarray(self.tokens[start : start + self.seq_len + 1])
        return window_tensors(chunk, self.doc_starts, start, packing)


class MixtureStream:
    """This rank's micro-batches of rows drawn from a mixture of sources (see the module docstring)."""

    def __init__(
        self,
        sources: list[SourceWindows],
        plan: StagePlan,
        batch_size: int,
        rows_per_step: int,
        seed: int = 0,
        packing: Packing = "isolated",
        rank: int = 0,
        world_size: int = 1,
    ):
        if [s.name for s in sources] != plan.names:
            raise ValueError("sources must follow the plan's order")
        self.sources, self.plan, self.batch_size, self.rows_per_step = sources, plan, batch_size, rows_per_step
        self.seed, self.packing, self.rank, self.world_size = seed, packing, rank, world_size
        self.rows = 0  # rows drawn so far, over all ranks
        self.drawn = [0] * len(sources)  # windows drawn per source
        self.per_stage: dict[str, list[int]] = {}  # rows per source in each stage, for the summary
        self._draw_step, self._uniforms = -1, np.zeros(0)

    def draw(self, row: int) -> tuple[str, int]:
        """(stage, source index) of row `row`: a uniform draw from the step's stream, against its stage's weights."""
        step, k = divmod(row, self.rows_per_step)
        if step != self._draw_step:
            # One generator per step, not per row: the draw still depends only on (seed, step, k).
            self._draw_step = step
            self._uniforms = np.random.default_rng([self.seed, _SOURCE_DRAW, step]).random(self.rows_per_step)
        stage, weights = self.plan.at(step)
        return stage, min(int(np.searchsorted(np.cumsum(weights), self._uniforms[k], side="right")), len(weights) - 1)

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's `batch_size` rows of the next `batch_size * world_size` rows of the run."""
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        rows, picked = [], []
        for offset in range(self.batch_size * self.world_size):
            stage, index = self.draw(self.rows + offset)
            n = self.drawn[index]
            self.drawn[index] += 1
            self.per_stage.setdefault(stage, [0] * len(self.sources))[index] += 1
            if offset in mine:
                rows.append(self.sources[index].window(n, self.packing))
                picked.append(index)
        self.rows += self.batch_size * self.world_size
        batch = {key: torch.from_numpy(np.stack([r[key] for r in rows])) for key in rows[0]}
        batch["source"] = torch.tensor(picked, dtype=torch.int64)
        return batch

    def observed_shares(self) -> dict[str, dict[str, float]]:
        """Per stage, the share of the rows drawn so far that came from each source."""
        return {
            stage: {s.name: round(c / sum(counts), 6) for s, c in zip(self.sources, counts)}
            for stage, counts in self.per_stage.items()
        }

    def epochs(self) -> dict[str, float]:
        return {s.name: n / s.num_windows for s, n in zip(self.sources, self.drawn)}

    def state_dict(self) -> dict:
        return {
            "rows": self.rows,
            "drawn": {s.name: n for s, n in zip(self.sources, self.drawn)},
            "per_stage": {stage: list(counts) for stage, counts in self.per_stage.items()},
            "windows": {s.name: s.num_windows for s in self.sources},
            "rows_per_step": self.rows_per_step,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if "rows_per_step" not in state:
            raise DataError("the checkpoint's data position comes from an older chatforge; resume=never starts over")
        windows = {s.name: s.num_windows for s in self.sources}
        if state["windows"] != windows:
            raise DataError(
                f"the checkpoint's data had sources/sequences {state['windows']} but the current data has {windows}; "
                "resume with the same data sources and data.seq_len"
            )
        if state["seed"] != self.seed:
            raise DataError(f"the checkpoint was trained with train.seed={state['seed']}, not {self.seed}; resume with the same seed")
        if state["rows_per_step"] != self.rows_per_step:
            raise DataError(
                f"the checkpoint's steps had {state['rows_per_step']} rows (micro_batch_size x grad_accum_steps x processes) "
                f"but this run has {self.rows_per_step}; mixture stages and the data order are laid out per step, so "
                "resume with the same global batch (any split of it across accumulation and processes is fine)"
            )
        self.rows = state["rows"]
        self.drawn = [state["drawn"][s.name] for s in self.sources]
        self.per_stage = {stage: list(counts) for stage, counts in state["per_stage"].items()}


def eval_batches(
    tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int, batch_size: int, packing: Packing, max_batches: int | None
):
    """Non-overlapping windows over a held-out stream, in order, for a cheap validation loss."""
    n = (len(tokens) - 1) // seq_len if len(tokens) > 1 else 0
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    for begin in range(0, n, batch_size):
        rows = [
            window_tensors(np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1]), doc_starts, i * seq_len, packing)
            for i in range(begin, min(begin + batch_size, n))
        ]
        yield {key: torch.from_numpy(np.stack([r[key] for r in rows])) for key in rows[0]}
