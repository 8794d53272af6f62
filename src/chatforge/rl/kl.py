"""The KL coefficient β of online RL: fixed, or adapted toward a target KL.

Adaptive (Ziegler et al. 2019, arXiv:1909.08593, §2.2), after each rollout batch of n samples whose
measured KL to the reference (summed over a response's tokens, averaged over samples) is KL:

    e = clip(KL / KL_target − 1, −0.2, 0.2)
    β ← β · (1 + e · n / horizon)

so β grows while the policy drifts past the target and shrinks while it stays below. The state (β)
is saved with the run's data position, so a resumed run continues with the same coefficient.
"""

from __future__ import annotations

from pydantic import Field

from chatforge.config.base import StrictModel

ERROR_CLIP = 0.2


class AdaptiveKLConfig(StrictModel):
    target: float = Field(6.0, gt=0, description="target KL per response (nats, summed over its tokens)")
    horizon: int = Field(10000, ge=1, description="samples over which β moves by the clipped error")


class KLController:
    """β and its update rule (`adaptive=None`: fixed)."""

    def __init__(self, coef: float, adaptive: AdaptiveKLConfig | None = None):
        self.value, self.adaptive = float(coef), adaptive

    def update(self, measured_kl: float, samples: int) -> float:
        """Move β after a rollout batch of `samples` samples whose mean KL was `measured_kl`; return it."""
        if self.adaptive is not None:
            error = min(max(measured_kl / self.adaptive.target - 1.0, -ERROR_CLIP), ERROR_CLIP)
            self.value *= 1.0 + error * samples / self.adaptive.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
