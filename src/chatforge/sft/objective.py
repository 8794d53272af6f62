"""The SFT loss: weighted next-token NLL over the supervised (answer) tokens of SFT rows."""

from __future__ import annotations

import torch

from chatforge.data.packing import lm_forward
from chatforge.engine.loop import StepOutput
from chatforge.losses.lm import weighted_token_nll_sum


class SFTObjective:
    """`objective(model, batch) -> StepOutput(Σ w_t NLL_t, supervised tokens)` for `SFTBatches` rows.

    Rows already carry shifted `labels`, `loss_weights`, and `position_ids` (pack) or `attention_mask`
    (pad), so the logits at position t are scored against `labels[t]` directly.
    """

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = lm_forward(model, batch)
        loss_sum, count = weighted_token_nll_sum(logits, batch["labels"], batch["loss_weights"])
        return StepOutput(loss_sum, count)
