"""The loss settings of the DPO stage (`loss.*`); the formulas are in `chatforge.losses.dpo`."""

from __future__ import annotations

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.losses.dpo import IpoLogps, LossType, NllNorm


class DPOLossConfig(StrictModel):
    loss: LossType = Field("sigmoid", description="sigmoid (DPO), hinge (SLiC) or ipo")
    beta: float = Field(0.1, gt=0.0, description="β: strength of the KL tie to the reference (IPO: target margin 1/(2β))")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="ε of conservative DPO (sigmoid only): the label is trusted with p* = 1 − ε"
    )
    reference_free: bool = Field(False, description="log π_ref = 0: no reference model at all")
    ipo_logps: IpoLogps = Field(
        "sum", description="ipo only: sum (the IPO paper: sequence log-probs) or mean (TRL: per-token average)"
    )
    preference_field: str | None = Field(
        None,
        description="sigmoid only: record field holding each pair's p*(chosen ≻ rejected) in [0.5, 1]; "
        "its ε = 1 − p* replaces label_smoothing for that pair",
    )
    sft_weight: float = Field(0.0, ge=0.0, description="λ of the added NLL on the chosen answer (0 = plain DPO)")
    nll: NllNorm = Field("per_token", description="the NLL term: per_token (mean over the answer) or per_sequence (sum)")

    @model_validator(mode="after")
    def _check(self) -> DPOLossConfig:
        if self.label_smoothing > 0 and self.loss != "sigmoid":
            raise ValueError(f"loss.label_smoothing (conservative DPO) applies to loss=sigmoid only, not {self.loss}")
        if self.preference_field is not None and self.loss != "sigmoid":
            raise ValueError(f"loss.preference_field (per-pair p*) applies to loss=sigmoid only, not {self.loss}")
        return self
