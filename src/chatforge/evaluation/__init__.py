"""Evaluation of trained models.

- `multiple_choice`: few-shot multiple-choice accuracy by option-letter logits (C-Eval / MMLU files,
  the task world's knowledge test); file reading in `mc_data`. See docs/evaluation.md.
- `domains`: per-domain bits-per-byte and knowledge accuracy before and after a stage.
"""
