"""The fidelity report of an adapter: eval/report.md and its PNG charts, in the adapter folder."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from trainer.metrics import AdapterMetrics, fact_recall_line
from twin.core.files import ensure_private_dir, write_private_text

COLUMNS = ("real", "base", "twin")
COLORS = {"real": "tab:blue", "base": "tab:gray", "twin": "tab:green"}
RECALL_REPLIES = (
    ("guided", "memory, guided"),
    ("plain", "memory, plain decoding"),
    ("with", "with memory"),
    ("without", "without memory"),
)


def write_report(folder: Path, metrics: AdapterMetrics) -> Path:
    """eval/report.md and its charts; private (0600/0700): they quote held-out messages."""
    assert metrics.fidelity is not None
    out = ensure_private_dir(folder / "eval")
    full = metrics.fidelity.full
    _write_private_bytes(out / "lengths.png", lengths_chart(full))
    _write_private_bytes(out / "habits.png", habits_chart(full))
    path = out / "report.md"
    write_private_text(path, markdown(metrics))
    return path


def _write_private_bytes(path: Path, data: bytes) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def headline_table(metrics: AdapterMetrics) -> str:
    """The comparison that matters, as plain text lines (for Telegram)."""
    f = metrics.fidelity
    assert f is not None
    full = f.full
    lines = [
        f"held-out loss: base {metrics.base_eval_loss:.3f}, twin {metrics.eval_loss:.3f}",
        f"style distance (0 = yours): base {f.style_distance_base:.2f}, "
        f"twin {f.style_distance_twin:.2f}",
        f"real-vs-generated AUC (0.5 = can't tell): base {_num(f.auc_base)}, "
        f"twin {_num(f.auc_twin)}",
    ]
    semantic = full.get("semantic_similarity")
    if semantic:
        lines.append(
            f"relevance (similarity to your reply): base {semantic['base']:.2f}, "
            f"twin {semantic['twin']:.2f}"
        )
    lines.append(
        f"memorization: {f.memorization_rate:.0%} verbatim copies, "
        f"{full['memorization']['ngram_overlap']:.0%} 8-gram overlap; "
        f"PII-looking values written: {f.pii_in_replies}"
    )
    guidance = full.get("guidance")  # absent in metrics.json written before guidance
    if guidance:
        lines.append(guidance_line(guidance))
    memory = full.get("memory")
    if memory:
        loss = memory["loss"]
        line = (
            f"memory: held-out loss {loss['with_memory']:.3f} with it, "
            f"{loss['without_memory']:.3f} without"
        )
        if "relevance" in memory:
            relevance = memory["relevance"]
            line += f"; relevance {relevance['with_memory']:.2f} with"
            if "with_memory_unguided" in relevance:
                line += f" (unguided {relevance['with_memory_unguided']:.2f})"
            line += f", {relevance['without_memory']:.2f} without"
        lines.append(line)
        if "fact_recall" in memory:
            lines.append(fact_recall_line(memory["fact_recall"]))
    if "canaries" in full:
        c = full["canaries"]
        lines.append(f"canaries: {c['emitted']} of {c['planted']} planted secrets emitted")
    return "\n".join(lines)


def guidance_line(guidance: dict[str, Any]) -> str:
    """The twin's figures with memory guidance on (as configured) and off, or why they are
    the same."""
    value = f"memory guidance {guidance['memory_guidance']:g}"
    if "same" in guidance:
        return f"{value}: no unguided figures ({guidance['same']})"
    on, off = guidance["on"], guidance["off"]
    line = (
        f"{value} on / off: style distance {on['style_distance']:.2f} / "
        f"{off['style_distance']:.2f}, AUC {_num(on['auc'])} / {_num(off['auc'])}"
    )
    if on["semantic_similarity"] is not None and off["semantic_similarity"] is not None:
        line += f", relevance {on['semantic_similarity']:.2f} / {off['semantic_similarity']:.2f}"
    return line


def markdown(metrics: AdapterMetrics) -> str:
    assert metrics.fidelity is not None
    full = metrics.fidelity.full
    style = full["style"]
    version = metrics.version
    out = [
        f"# Fidelity report: adapter {version}",
        "",
        f"{full['prompts']} held-out messages answered by the base model and the twin "
        "(serving settings), compared with the owner's real replies.",
        "",
        "```",
        headline_table(metrics),
        "```",
        "",
        "## Style",
        "",
        "| | real | base | twin |",
        "|---|---|---|---|",
    ]
    for key in style["real"]:
        row = " | ".join(f"{style[c][key]:.2f}" for c in COLUMNS)
        out.append(f"| {key.replace('_', ' ')} | {row} |")
    out += [
        "",
        "Distance to the real replies per feature (sizes: Wasserstein-1 / real mean; "
        "habits: difference of rates; script: total variation):",
        "",
        "| feature | base | twin |",
        "|---|---|---|",
    ]
    for key, value in full["style_distance"]["base"].items():
        out.append(
            f"| {key.replace('_', ' ')} | {value:.3f} | {full['style_distance']['twin'][key]:.3f} |"
        )
    words = ", ".join(full["characteristic_words"]) or "(too little data)"
    out += ["", f"Characteristic words of the owner: {words}", ""]
    out += ["![reply lengths](lengths.png)", "", "![habits](habits.png)", "", "## Examples", ""]
    for example in full["examples"]:
        out += [
            f"- **message**: {_quote(example['message'])}",
            f"  - real: {_quote(example['real'])}",
            f"  - base: {_quote(example['base'])}",
            f"  - twin: {_quote(example['twin'])}",
        ]
    recall = full.get("memory", {}).get("fact_recall")
    if recall and recall["examples"]:
        out += ["", "## Fact recall", "", fact_recall_line(recall), ""]
        for example in recall["examples"]:
            out.append(f"- **question**: {_quote(example['question'])}")
            # Before memory guidance an example held "with" and "without" only.
            for key, label in RECALL_REPLIES:
                if key in example:
                    out.append(f"  - {label}: {_quote(example[key])}")
    if full.get("semantic_note"):
        out += ["", f"Relevance: {full['semantic_note']}"]
    return "\n".join(out) + "\n"


def lengths_chart(full: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    lengths = full["lengths"]
    top = max(max(v, default=1) for v in lengths.values())
    bins = [0, 5, 10, 20, 40, 80, 160, 320, max(640, top + 1)]
    for column in COLUMNS:
        axes.hist(
            lengths[column],
            bins=bins,
            histtype="step",
            linewidth=2,
            color=COLORS[column],
            label=column,
            density=True,
        )
    axes.set_xscale("symlog", linthresh=5)
    axes.set(title="reply length (characters)", xlabel="characters", ylabel="share")
    axes.legend()
    return _png(figure)


def habits_chart(full: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    style = full["style"]
    keys = [k for k in style["real"] if k.endswith("_rate")]
    figure = Figure(figsize=(8, 3.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    width = 0.27
    for n, column in enumerate(COLUMNS):
        axes.bar(
            [i + (n - 1) * width for i in range(len(keys))],
            [style[column][k] for k in keys],
            width,
            label=column,
            color=COLORS[column],
        )
    axes.set_xticks(range(len(keys)), [k.removesuffix("_rate").replace("_", " ") for k in keys])
    axes.tick_params(axis="x", labelrotation=30, labelsize="small")
    axes.set(title="share of replies with each habit", ylim=(0, 1))
    axes.legend()
    return _png(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _quote(text: str) -> str:
    return text.replace("\n", " / ").replace("|", "\\|") or "(nothing)"
