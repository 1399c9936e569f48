"""What the owner is told after a retrain, and by /persona report: a few lines and a PNG chart
(the adapter's training loss, and held-out loss across the last adapters, base vs twin)."""

from __future__ import annotations

import io

from trainer.registry import AdapterInfo
from trainer.report import headline_table
from twin.core.runs import RunRecord

CHART_ADAPTERS = 10  # adapters shown in the held-out loss history


def run_summary(record: RunRecord, previous: AdapterInfo | None) -> str:
    """The text of a retrain report, from its run record."""
    outcome = record.outcome
    adapter = record.adapter
    if outcome == "promoted":
        head = f"Retrain: adapter {adapter} promoted, now serving."
    elif outcome == "not promoted":
        head = f"Retrain: adapter {adapter} not promoted ({record.reason}); serving as before."
    elif outcome == "skipped":
        head = f"Retrain skipped: {record.reason}."
    else:
        head = f"Retrain failed: {record.error or record.reason}"
    lines = [head]
    metrics = record.metrics
    if metrics:
        line = f"Held-out loss: base {metrics.base_eval_loss:.3f} -> new {metrics.eval_loss:.3f}"
        if previous is not None and previous.version != adapter:
            line += f" (adapter before: {previous.metrics.eval_loss:.3f})"
        lines.append(line)
    if record.preference:
        lines.append(record.preference[0].upper() + record.preference[1:])
    lines.append(f"New messages: {record.messages_added}, examples: {record.examples}")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in record.stages.items())
    lines.append(f"Took {record.seconds / 60:.1f} min ({stages})")
    return "\n".join(lines)


def adapter_summary(adapter: AdapterInfo) -> str:
    m = adapter.metrics
    lines = [
        f"Adapter {adapter.version} ({adapter.state}), trained {adapter.created}",
        f"Held-out loss: base {m.base_eval_loss:.3f} -> twin {m.eval_loss:.3f} "
        f"(perplexity {m.base_eval_ppl:.0f} -> {m.eval_ppl:.0f})",
        f"Trained {m.run.steps} steps on {m.dataset.train} examples, "
        f"{m.seconds / 60:.1f} min, {m.run.tokens_per_s:.0f} tokens/s ({m.plan})",
    ]
    if m.fidelity is not None:  # the headline of `twin eval` (the full report: eval/report.md)
        lines.append(headline_table(m))
    return "\n".join(lines)


def fidelity_charts(adapter: AdapterInfo) -> list[bytes]:
    """The eval report's charts (reply lengths and habits: real vs base vs twin), if made."""
    folder = adapter.path / "eval"
    return [
        (folder / name).read_bytes()
        for name in ("lengths.png", "habits.png")
        if (folder / name).exists()
    ]


def loss_chart(adapter: AdapterInfo, history: list[AdapterInfo]) -> bytes:
    """PNG: the adapter's training loss by step, and held-out loss of the last adapters."""
    from matplotlib.figure import Figure  # the OO API: no pyplot state, no display needed

    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    steps = adapter.metrics.run.train_loss_history
    left.plot([p["step"] for p in steps], [p["loss"] for p in steps], color="tab:blue")
    left.axhline(adapter.metrics.base_eval_loss, color="tab:gray", ls="--", label="base held-out")
    left.axhline(adapter.metrics.eval_loss, color="tab:green", ls="--", label="twin held-out")
    left.set(title=f"training loss, adapter {adapter.version}", xlabel="step", ylabel="loss")
    left.legend(loc="upper right", fontsize="small")

    shown = history[-CHART_ADAPTERS:]
    xs = range(len(shown))
    right.plot(xs, [a.metrics.base_eval_loss for a in shown], "o--", color="tab:gray", label="base")
    right.plot(xs, [a.metrics.eval_loss for a in shown], "o-", color="tab:green", label="twin")
    for x, a in enumerate(shown):
        if a.state == "current":
            right.annotate(
                "current",
                (x, a.metrics.eval_loss),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize="small",
            )
    # versions are YYYYmmdd-HHMMSS: show mm-dd HH:MM
    right.set_xticks(
        list(xs),
        [f"{a.version[4:6]}-{a.version[6:8]} {a.version[9:11]}:{a.version[11:13]}" for a in shown],
    )
    right.set_xlim(-0.5, len(shown) - 0.5)
    right.set(title="held-out loss by adapter", xlabel="adapter", ylabel="loss")
    right.tick_params(axis="x", labelrotation=45, labelsize="small")
    right.legend(loc="upper right", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
