"""Reward models: preference data as ranked groups, the scalar-head model, its objective and metrics.

The stage is `chatforge.stages.rm`; the losses are `chatforge.losses.reward`.
"""
