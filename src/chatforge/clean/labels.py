"""Label-based cleaning (the seed's advanced cleaning, STEP 1 §3.2.2): selection rules over label
expressions, and rebalancing by a label's distribution.

An expression is a Python comparison over label names, e.g. `lang == 'en' and ppl < 80` or
`verdicts.doc_filters != 'ok'`; it is parsed with `ast` and only names, constants, comparisons,
boolean and arithmetic operators and `.` into nested labels are allowed (no calls, no attributes of
objects). A missing label is None, so `ppl < 80` is False (not an error) for an unscored document.
"""

from __future__ import annotations

import ast
import operator
import random
from collections import Counter, defaultdict
from typing import Any

from chatforge.clean.config import RebalanceConfig, RuleConfig
from chatforge.errors import ConfigError

LENGTH_BUCKETS = ((100, "short"), (500, "medium"), (2000, "long"))

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
            ast.Is: operator.is_, ast.IsNot: operator.is_not}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def length_bucket(words: int) -> str:
    return next((name for limit, name in LENGTH_BUCKETS if words < limit), "very_long")


class Expression:
    def __init__(self, text: str):
        self.text = text
        try:
            self.tree = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise ConfigError(f"label expression {text!r}: {exc.msg}") from None
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Name, ast.Load,
                   ast.Constant, ast.Attribute, ast.BinOp, ast.Tuple, ast.List, *_COMPARE, *_ARITH)
        for child in ast.walk(node):
            if not isinstance(child, allowed):
                raise ConfigError(f"label expression {self.text!r}: {type(child).__name__} is not allowed "
                                  "(use label names, constants, comparisons, and/or/not, + - * /)")

    def __call__(self, values: dict[str, Any]) -> Any:
        return self._eval(self.tree, values)

    def _eval(self, node: ast.AST, values: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = self._eval(node.value, values)
            return parent.get(node.attr) if isinstance(parent, dict) else None
        if isinstance(node, (ast.Tuple, ast.List)):
            return [self._eval(e, values) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            results = (bool(self._eval(v, values)) for v in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, values)
            return (not value) if isinstance(node.op, ast.Not) else (-value if value is not None else None)
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, values), self._eval(node.right, values)
            return None if left is None or right is None else _ARITH[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator, values)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError:  # None < 80: a missing label fails the comparison
                    return False
                left = right
            return True
        raise ConfigError(f"label expression {self.text!r}: cannot evaluate {type(node).__name__}")


def label_values(record: dict[str, Any]) -> dict[str, Any]:
    """What an expression sees: every label, plus `verdicts` and `url`."""
    return {**record.get("labels", {}), "verdicts": record.get("verdicts", {}), "url": record.get("url")}


def select(records: list[dict], rules: list[RuleConfig]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Apply the rules in order. Returns (kept records with a `weight` label, dropped with the rule)."""
    compiled = [(rule, Expression(rule.when)) for rule in rules]
    kept, dropped = [], []
    for record in records:
        values = label_values(record)
        weight, drop_by = 1.0, None
        for rule, expression in compiled:
            hit = bool(expression(values))
            if (rule.action == "drop" and hit) or (rule.action == "keep" and not hit):
                drop_by = f"{rule.action}: {rule.when}"
                break
            if rule.action == "weight" and hit:
                weight = rule.weight
        if drop_by is None and weight == 0.0:
            drop_by = "weight 0"
        if drop_by is not None:
            dropped.append((record, drop_by))
            continue
        record.setdefault("labels", {})["weight"] = weight
        kept.append(record)
    return kept, dropped


def rebalance(records: list[dict], cfg: RebalanceConfig) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Downsample so the label's values have the target shares, keeping as many documents as that allows.

    With counts c_v and target shares t_v (normalised over the listed values), the largest total N
    with N * t_v <= c_v for every v is min_v c_v / t_v; value v keeps round(N * t_v) documents, drawn
    without replacement by a seeded shuffle. Documents whose value is not listed are dropped.
    """
    total_share = sum(cfg.target.values())
    if total_share <= 0:
        raise ConfigError("rebalance.target: the shares must add up to more than 0")
    target = {str(k): v / total_share for k, v in cfg.target.items() if v > 0}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[str(record.get("labels", {}).get(cfg.label))].append(i)
    available = Counter({v: len(groups.get(v, [])) for v in target})
    size = min(available[v] / share for v, share in target.items())
    rng = random.Random(cfg.seed)
    keep: set[int] = set()
    for value, share in target.items():
        members = list(groups.get(value, []))
        rng.shuffle(members)
        keep.update(members[: int(round(size * share))])
    kept = [r for i, r in enumerate(records) if i in keep]
    dropped = [(r, f"{cfg.label}={r.get('labels', {}).get(cfg.label)}") for i, r in enumerate(records) if i not in keep]
    return kept, dropped
