"""Offline preference optimisation (the DPO family) on top of the engine.

- `data`: preference pairs (task world and TRL/UltraFeedback layouts) read, checked and encoded with
  last-answer-only labels; `collate_pairs` puts chosen and rejected in one padded batch; `PairBatches`.
- `objective`: `sequence_logps` (one forward for 2B rows, LM head at answer positions only), the
  reference log-probs (precomputed and cached, or live) and `DPOObjective`.
- `evaluate`: held-out preference accuracy and margins; gold reward of greedy answers.

The losses themselves are pure functions in `chatforge.losses.dpo`. See docs/dpo.md.
"""
