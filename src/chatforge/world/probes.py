"""Learning-dynamics probes: many responses to one preference prompt, whose log-probabilities a
training run can track (how chosen, rejected and unrelated responses move under SFT or DPO).

Per prompt (a training preference pair whose rejected answer is simply wrong):
  chosen                          the pair's chosen response
  rejected                        the pair's rejected (wrong) response
  chosen_paraphrase               same answer, same format, different wording
  chosen_new_format               same answer without the final-answer sentence
  rejected_paraphrase             same wrong answer, same format, different wording
  rejected_new_format             same wrong answer without the final-answer sentence
  irrelevant_train                the chosen response of another training pair
  irrelevant_test                 the chosen response of a held-out (test) pair
  chosen_permuted                 the chosen response's words in a random order (a WORD-level
                                  permutation, so it is tokenizer-independent)
  random_tokens                   a random string of letters, digits and symbols, as many "words"
                                  as the chosen response: text no human would write
The model's own greedy answer is a probe too, but only a model can write it.
"""

from __future__ import annotations

import random
import string

from chatforge.world.answers import extract_final_answer
from chatforge.world.people import World
from chatforge.world.records import PreferencePair, ProbeRecord
from chatforge.world.responses import render_answer, render_other_format
from chatforge.world.reward import gold_reward, spec_from_prompt
from chatforge.world.seeding import rng_for

PROBE_KINDS: tuple[str, ...] = (
    "chosen", "rejected", "chosen_paraphrase", "chosen_new_format", "rejected_paraphrase", "rejected_new_format",
    "irrelevant_train", "irrelevant_test", "chosen_permuted", "random_tokens",
)
_NON_HUMAN = string.ascii_letters + string.digits + "#$%&*+/<=>@[]^_{|}~"


def _paraphrase(spec, value: str, original: str) -> str:
    """The same answer in the convention format, worded differently from `original`."""
    for variant in range(6):
        text = render_answer(spec, value, variant)
        if text != original:
            return text
    raise RuntimeError(f"bug: no paraphrase of {original!r}")


def _permuted(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(set(words)) < 2:
        return text
    shuffled = list(words)
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def _random_tokens(length: int, rng: random.Random) -> str:
    return " ".join("".join(rng.choice(_NON_HUMAN) for _ in range(rng.randint(2, 7))) for _ in range(max(length, 3)))


def probe_records(seed: int, world: World, train_pairs: list[PreferencePair], test_pairs: list[PreferencePair],
                  count: int) -> list[ProbeRecord]:
    rng = rng_for(seed, "probes")
    # Worked solutions have only one wording, so they cannot be paraphrased in the same format.
    usable = [p for p in train_pairs if p["kind"] == "wrong" and not spec_from_prompt(p["prompt"], world).worked]
    records: list[ProbeRecord] = []
    for index, pair in enumerate(usable[:count]):
        spec = spec_from_prompt(pair["prompt"], world)
        wrong_value = extract_final_answer(pair["rejected"]) or ""
        others = [p for p in train_pairs if p["prompt"] != pair["prompt"]]
        responses = {
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
            "chosen_paraphrase": _paraphrase(spec, spec.answer, pair["chosen"]),
            "chosen_new_format": render_other_format(spec, spec.answer, rng.randrange(3)),
            "rejected_paraphrase": _paraphrase(spec, wrong_value, pair["rejected"]),
            "rejected_new_format": render_other_format(spec, wrong_value, rng.randrange(3)),
            "irrelevant_train": rng.choice(others)["chosen"],
            "irrelevant_test": rng.choice(test_pairs)["chosen"],
            "chosen_permuted": _permuted(pair["chosen"], rng),
            "random_tokens": _random_tokens(len(pair["chosen"].split()), rng),
        }
        records.append({
            "id": f"probe-{index:06d}", "pair_id": pair["id"], "task": pair["task"], "prompt": pair["prompt"],
            "responses": responses,
            "rewards": {kind: gold_reward(pair["prompt"], text, world) for kind, text in responses.items()},
        })
    return records
