"""The evaluation report: a JSON with every number, a Markdown summary, and PNG plots (models
side by side): accuracy per category, accuracy per transformation, reward shift per
transformation and for the planted cue.

Plots are drawn with matplotlib's Agg backend (no display needed) into bytes, so they can be
written to any storage (local, s3:// or gs://) like the other files of a run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

PLOTS = ("categories.png", "transformations.png", "shift.png")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a run's manifest and the command's table show for one model."""
    cue = metrics.get("cue") or {}
    return {
        "pairs": metrics["pairs"],
        "average": metrics["average"],
        "categories": metrics["categories"],
        "overall": metrics["overall"],
        "transformed_macro_accuracy": metrics["transformed_macro_accuracy"],
        "transformed_macro_drop": metrics["transformed_macro_drop"],
        "cue_shift_in_spread": (cue.get("shift") or {}).get("mean_in_spread"),
        "accuracy_cue_on_rejected": cue.get("accuracy_cue_on_rejected"),
        "best_of_n_quality": (metrics.get("best_of_n") or {}).get("quality"),
    }


def markdown(doc: Mapping[str, Any]) -> str:
    models: dict[str, Any] = doc["models"]
    labels = list(models)
    cats = sorted({c for m in models.values() for c in m["categories"]})
    lines = [
        f"# Evaluation {doc['run_name']}",
        "",
        "Data: " + ", ".join(f"{d['name']} ({d['pairs']} pairs)" for d in doc["data"]) + ". "
        f"Ties: {doc['tie_rule']}; a category weighs its subsets by their pairs "
        f"(math-prm as much as all code subsets: {doc['upweight_math']}).",
        "",
        "## Accuracy",
        "",
        "| model | " + " | ".join([*cats, "Average", "all pairs", "transformed (macro)", "drop"]) + " |",
        "|---" * (len(cats) + 5) + "|",
    ]
    for label in labels:
        m = models[label]
        row = [_fmt(m["categories"].get(c)) for c in cats]
        row += [_fmt(m["average"]), _fmt(m["overall"]), _fmt(m["transformed_macro_accuracy"])]
        row += [_fmt(m["transformed_macro_drop"])]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    names = sorted({t for m in models.values() for t in m["transformations"]})
    if names:
        lines += [
            "",
            "## Per transformation",
            "",
            "Accuracy on the pairs a transformation applies to (drop from the same pairs untransformed), "
            "and the mean reward shift r(T) − r in units of the model's reward spread.",
            "",
            "| transformation | pairs | " + " | ".join(f"{x} acc (drop) | {x} shift" for x in labels) + " |",
            "|---" * (2 + 2 * len(labels)) + "|",
        ]
        for t in names:
            cells = []
            pairs = next(
                m["transformations"][t]["pairs"] for m in models.values() if t in m["transformations"]
            )
            for label in labels:
                x = models[label]["transformations"].get(t)
                if x is None:
                    cells += ["–", "–"]
                    continue
                cells.append(f"{_fmt(x['accuracy'])} ({_fmt(x['drop'], 2)})")
                cells.append(_fmt(x["shift"]["mean_in_spread"], 2))
            lines.append(f"| {t} | {pairs} | " + " | ".join(cells) + " |")
    rw = doc.get("rewrites")
    if rw:
        lines += [
            "",
            "## Rewritten by the oracle",
            "",
            f"{rw['answers']} distinct answers sent ({rw['too_long']} too long to send); "
            f"${rw['spent_usd']:.4f} spent of the ${rw['cap_usd']:g} cap"
            + (f" (the local fallback: ${rw['fallback_spent_usd']:.4f})" if rw["fallback_spent_usd"] else "")
            + (f"; back-translation through {rw['pivot_language']}" if rw["pivot_language"] else "")
            + ".",
            "",
            "| transformation | pairs | rewritten | skipped |",
            "|---|---|---|---|",
        ]
        for t, x in rw["transformations"].items():
            why = ", ".join(f"{n} {k}" for k, n in sorted(x["skipped"].items())) or "–"
            lines.append(f"| {t} | {x['pairs']} | {x['variants']} | {why} |")
        runs = ", ".join(f"`{r['uri']}`" for r in rw["oracle_runs"].values()) or "none (nothing to send)"
        lines += ["", f"Oracle runs: {runs}."]
    if any("cue" in m for m in models.values()):
        lines += [
            "",
            "## Planted cue",
            "",
            f"Cue: `{doc['cue']['text'][:80]!r}` ({doc['cue']['position']} of the answer).",
            "",
            "| model | shift (reward) | shift (spread) | share above threshold "
            "| acc. cue on rejected | clean acc. |",
            "|---|---|---|---|---|---|",
        ]
        for label in labels:
            c = models[label].get("cue")
            if c:
                s = c["shift"]
                lines.append(
                    f"| {label} | {_fmt(s['mean'])} | {_fmt(s['mean_in_spread'], 2)} "
                    f"| {_fmt(s['share_above'], 2)} | {_fmt(c['accuracy_cue_on_rejected'])} "
                    f"| {_fmt(c['accuracy_clean'])} |"
                )
    if any("best_of_n" in m for m in models.values()):
        refs = sorted({r for m in models.values() for r in (m.get("best_of_n") or {}).get("win_rate", {})})
        subsets = sorted({s for m in models.values() for s in (m.get("best_of_n") or {}).get("subsets", {})})
        lines += [
            "",
            "## Best-of-N",
            "",
            "Each model picks the highest-reward answer of each prompt's candidates; quality is the "
            "reference label of its pick (XSTest: compliance on a safe prompt, refusal on an unsafe one). "
            "Win rate: its pick against the reference's pick (ties ½).",
            "",
            "| model | prompts | quality | "
            + " | ".join(subsets)
            + " | ceiling | random | "
            + " | ".join(f"win vs {r}" for r in refs)
            + " |",
            "|---" * (5 + len(subsets) + len(refs)) + "|",
        ]
        for label in labels:
            b = models[label].get("best_of_n")
            if not b:
                continue
            cells = [str(b["prompts"]), _fmt(b["quality"])]
            cells += [_fmt(b["subsets"].get(x, {}).get("quality")) for x in subsets]
            cells += [_fmt(b["ceiling"]), _fmt(b["random"])]
            cells += [_fmt(b["win_rate"].get(r, {}).get("rate")) for r in refs]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def _bars(ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], ylabel: str) -> None:
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(
            x + i * width - 0.4 + width / 2, [np.nan if v is None else v for v in values], width, label=label
        )
    ax.set_xticks(
        x, groups, rotation=45 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center"
    )
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi), the figure closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _bar_plot(
    width: float,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    ylabel: str,
    title: str,
    *,
    accuracy: bool,
) -> bytes:
    """Grouped bars, models side by side: accuracy (0..1, chance dashed) or a shift around 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 4.5))
    _bars(ax, groups, series, ylabel)
    if accuracy:
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
    else:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_title(title)
    return png_bytes(fig)


def plots(doc: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot of ``PLOTS``."""
    models: dict[str, Any] = doc["models"]
    cats = [*sorted({c for m in models.values() for c in m["categories"]}), "Average"]
    names = sorted({t for m in models.values() for t in m["transformations"]})
    shifts = [*names, *(["planted cue"] if any("cue" in m for m in models.values()) else [])]

    def shift_of(m: Mapping[str, Any], g: str) -> float | None:
        found = m.get("cue") if g == "planted cue" else m["transformations"].get(g)
        return ((found or {}).get("shift") or {}).get("mean_in_spread")

    return {
        "categories.png": _bar_plot(
            8,
            cats,
            {
                k: [m["average"] if c == "Average" else m["categories"].get(c) for c in cats]
                for k, m in models.items()
            },
            "accuracy (ties ½)",
            "Accuracy per category",
            accuracy=True,
        ),
        "transformations.png": _bar_plot(
            10,
            ["untransformed", *names],
            {
                k: [m["overall"]] + [(m["transformations"].get(t) or {}).get("accuracy") for t in names]
                for k, m in models.items()
            },
            "accuracy (ties ½)",
            "Accuracy per transformation",
            accuracy=True,
        ),
        "shift.png": _bar_plot(
            10,
            shifts or ["(none)"],
            {k: [shift_of(m, g) for g in shifts] or [None] for k, m in models.items()},
            "mean r(T) − r, in reward spreads",
            "Reward shift per transformation",
            accuracy=False,
        ),
    }


def write_report(folder: Any, doc: Mapping[str, Any]) -> dict[str, str]:
    """``report.json``, ``report.md`` and the plots into ``folder`` (a storage Folder)."""
    written = {}
    files = {
        "report.json": json.dumps(doc, indent=2, sort_keys=True, default=float).encode(),
        "report.md": markdown(doc).encode(),
        **plots(doc),
    }
    for name, body in files.items():
        with folder.fs.open(folder.file(name), "wb") as f:
            f.write(body)
        written[name] = folder.uri_of(name)
    return written
