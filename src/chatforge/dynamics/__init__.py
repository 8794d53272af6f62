"""Learning-dynamics probes (Ren & Sutherland, "Learning Dynamics of LLM Finetuning", arXiv:2407.10490).

Every N steps of an SFT or DPO run (the `dynamics:` section of its config), the log-probability of
many responses to a fixed set of prompts: chosen, rejected, paraphrases and reformats of both,
answers to other prompts, permuted and random tokens, and the model's current greedy answer; plus
the probability mass on the argmax token along the chosen answer. Rows go to OUT/dynamics.jsonl,
the plot to OUT/report/dynamics.png, and the squeezing verdict to summary.json (docs/dynamics.md).

    config.py   DynamicsConfig
    probes.py   load the probes, derive the missing kinds, encode them once
    measure.py  one measurement of a model
    report.py   dynamics.jsonl, plot_dynamics, detect_squeezing
    hook.py     ProbeHook: the probes through the engine's evaluate callable
"""

from chatforge.dynamics.config import ALL_KINDS, DynamicsConfig
from chatforge.dynamics.hook import ProbeHook
from chatforge.dynamics.measure import measure
from chatforge.dynamics.probes import ProbeSet, encode_probes
from chatforge.dynamics.report import detect_squeezing, plot_dynamics, read_rows

__all__ = [
    "ALL_KINDS", "DynamicsConfig", "ProbeHook", "ProbeSet", "detect_squeezing", "encode_probes", "measure",
    "plot_dynamics", "read_rows",
]
