"""Heads on top of a causal LM's hidden states: the value head of PPO's critic, and the actor-critic pair.

`ValueHead` maps a final hidden state to one number, V(s_t): the expected return from the state
after the tokens so far. It starts at zero (weight and bias 0), so the first advantages are the
rewards themselves rather than noise from a random projection.

`ActorCritic` is the one module the engine trains in PPO (so one checkpoint and one optimizer
state hold both; the critic's parameter group has its own learning-rate scale):
- `critic="shared"`: the value head reads the actor's own final hidden states (one forward);
- `critic="separate"`: the value head sits on its own copy of the actor's decoder (two forwards;
  the actor's gradients never pass through the critic's loss).
Its forward returns, per response token, the actor's log-prob and entropy and the critic's value,
so a DDP wrapper around it sees every parameter in one call.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (...) in float32."""
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1).float()


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, critic: str = "shared"):
        super().__init__()
        if critic not in ("shared", "separate"):
            raise ValueError(f"critic must be shared or separate, not {critic!r}")
        self.policy = policy
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self.critic_backbone = copy.deepcopy(base.get_decoder()) if critic == "separate" else None
        self.value_head = ValueHead(base.config.hidden_size)

    @property
    def config(self):
        return self.policy.config

    def forward(self, input_ids, attention_mask, action_mask, temperature: float = 1.0):
        """(logp, entropy, values), each (rows, length - 1), aligned with the token each position predicts."""
        from chatforge.rl.forward import response_outputs

        shared = self.critic_backbone is None
        logp, entropy, hidden = response_outputs(
            self.policy, input_ids, attention_mask, action_mask, temperature, with_hidden=shared
        )
        if not shared:
            hidden = self.critic_backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0][:, :-1]
        values = self.value_head(hidden) * action_mask
        return logp, entropy, values

    def critic_parameters(self) -> list[nn.Parameter]:
        params = list(self.value_head.parameters())
        if self.critic_backbone is not None:
            params += list(self.critic_backbone.parameters())
        return params

    def save_pretrained(self, out_dir, state_dict=None, safe_serialization: bool = True, **kwargs) -> None:
        """The actor as a plain `transformers` directory (what the next stage loads); the critic
        (value head and, when separate, its backbone) beside it in critic.safetensors."""
        from safetensors.torch import save_file

        state_dict = state_dict if state_dict is not None else self.state_dict()
        policy_state = {k.removeprefix("policy."): v for k, v in state_dict.items() if k.startswith("policy.")}
        critic_state = {k: v.detach().contiguous().clone() for k, v in state_dict.items() if not k.startswith("policy.")}
        if hasattr(self.policy, "merge_and_unload"):  # LoRA: the adapters merged into a plain model
            copy.deepcopy(self.policy).merge_and_unload().save_pretrained(out_dir, safe_serialization=safe_serialization)
        else:
            self.policy.save_pretrained(out_dir, state_dict=policy_state, safe_serialization=safe_serialization, **kwargs)
        save_file(critic_state, str(Path(out_dir) / "critic.safetensors"))


def critic_param_groups(lr_scale: float):
    """`param_groups(model, weight_decay)` for the engine: the actor's groups at the run's LR, the
    critic's at `lr_scale` times it (the engine multiplies each group's LR by its `lr_scale`)."""
    from chatforge.engine.optim import parameter_groups

    def groups(model: nn.Module, weight_decay: float) -> list[dict]:
        inner = model.module if hasattr(model, "module") else model
        critic_ids = {id(p) for p in inner.critic_parameters()}
        out = []
        for group in parameter_groups(model, weight_decay):
            actor = [p for p in group["params"] if id(p) not in critic_ids]
            critic = [p for p in group["params"] if id(p) in critic_ids]
            if actor:
                out.append({**group, "params": actor, "lr_scale": 1.0})
            if critic:
                out.append({**group, "params": critic, "lr_scale": lr_scale})
        return out

    return groups
