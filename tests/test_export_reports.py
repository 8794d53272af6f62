"""Report plots (engine.plots): the loss's unit per objective, every logged metric plotted, Best-of-N lines."""

from __future__ import annotations

from chatforge.engine.plots import best_of_n_lines, loss_unit, metric_names, plot_training_curves

LM_ROWS = [{"step": s, "loss": 5.0 - s, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0, "tokens": 64 * s} for s in (1, 2)]
DPO_ROWS = [
    {"step": 1, "loss": 0.69, "lr": 1e-6, "grad_norm": 0.5, "rewards/margin": 0.0, "rewards/accuracy": 0.5, "tokens": 10},
    {"step": 2, "loss": 0.60, "lr": 1e-6, "grad_norm": 0.4, "rewards/margin": 0.2, "rewards/accuracy": 0.75, "tokens": 20},
    {"step": 2, "val/loss": 0.65, "val/rewards/margin": 0.1, "val/rewards/accuracy": 0.6},
]
RM_ROWS = [{"step": 1, "loss": 0.7, "lr": 1e-3, "accuracy": 0.5, "rewards/margin": 0.1}]


def test_loss_unit_follows_what_the_objective_counts():
    assert loss_unit(LM_ROWS) == "nats/token"
    assert loss_unit(DPO_ROWS) == "mean per pair"  # not nats/token: the DPO loss is -log sigmoid per pair
    assert loss_unit(RM_ROWS) == "mean per pair or ranking"


def test_every_logged_metric_gets_a_panel_with_its_val_twin(tmp_path):
    assert metric_names(LM_ROWS) == ["grad_norm"]
    assert metric_names(DPO_ROWS) == ["grad_norm", "rewards/margin", "rewards/accuracy"]
    written = plot_training_curves(DPO_ROWS, tmp_path, "dpo")
    assert [p.name for p in written] == ["loss.png", "lr.png", "metrics.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_best_of_n_with_gold_as_proxy_draws_the_gold_line_once():
    rows = [{"n": 1, "kl": 0.0, "gold": 0.4, "proxy": 0.4, "accuracy": 0.1}, {"n": 2, "kl": 0.19, "gold": 0.5, "proxy": 0.5, "accuracy": 0.2}]
    lines = best_of_n_lines(rows, "gold", "gold")
    assert [label for label, _, _ in lines] == ["gold reward (gold; also the proxy)", "accuracy"]
    other = [r | {"proxy": r["proxy"] + 1} for r in rows]
    assert [label for label, _, _ in best_of_n_lines(other, "reward_model", "gold")] == [
        "gold reward (gold)", "proxy reward (reward_model)", "accuracy"]


def test_eval_suite_shows_a_progress_bar_on_a_terminal(tmp_path, tiny_tokenizer, monkeypatch):
    """`chatforge eval`: one tick per (model, task) on stderr when it is a terminal; no bar otherwise."""
    import io
    import json
    import sys

    from chatforge.evaluation.suite import SuiteConfig, run_suite
    from tiny_models import make_tiny_model

    model_dir = tmp_path / "model"
    make_tiny_model(vocab_size=384).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": f"The cat sat on mat {i}."}) + "\n" for i in range(3)))
    task = {"kind": "lm", "data": [{"path": str(tmp_path / "text.jsonl")}]}
    cfg = SuiteConfig(models=[str(model_dir)], out=str(tmp_path / "e.json"), plot=False, tasks=[task, task | {"name": "again"}])

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, ticks in ((Terminal(), "2/2"), (io.StringIO(), None)):
        monkeypatch.setattr(sys, "stderr", stream)
        run_suite(cfg, progress=lambda line: None)
        shown = stream.getvalue()
        assert (ticks in shown and "] again" in shown) if ticks else "eval [" not in shown, shown[-300:]
