"""The online-RL stages' reference policy (`rl.setup.frozen_reference`): a given directory, the base
with adapters off for LoRA (None), else a copy of the starting model; frozen and in eval mode."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from chatforge.rl.setup import frozen_reference
from tiny_models import make_tiny_model


def _frozen_like(reference, model) -> bool:
    same = all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
    return same and not reference.training and not any(p.requires_grad for p in reference.parameters())


def test_reference_directory_copy_and_lora(tmp_path):
    policy = make_tiny_model(seed=0)
    other = make_tiny_model(seed=1)
    other.save_pretrained(tmp_path / "ref")
    loaded = frozen_reference(SimpleNamespace(reference=str(tmp_path / "ref"), mode="full"), policy, torch.device("cpu"))
    assert _frozen_like(loaded, other) and not _frozen_like(loaded, policy)
    copied = frozen_reference(SimpleNamespace(reference=None, mode="full"), policy, torch.device("cpu"))
    assert copied is not policy and _frozen_like(copied, policy)
    assert all(p.requires_grad for p in policy.parameters())  # the policy itself still trains
    assert frozen_reference(SimpleNamespace(reference=None, mode="lora"), policy, torch.device("cpu")) is None
