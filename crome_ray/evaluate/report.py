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


def with_interval(x: float | None, interval: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A number with its 95% interval: ``0.583 [0.32, 0.81]``."""
    if x is None:
        return "–"
    if not interval:
        return _fmt(x, digits)
    d = max(digits - 1, 2)
    return f"{x:.{digits}f} [{interval['low']:.{d}f}, {interval['high']:.{d}f}]"


def _iv(m: Mapping[str, Any], *path: str) -> Mapping[str, Any] | None:
    """The interval at ``path`` of a model's ``intervals`` (None where there is none)."""
    x: Any = m.get("intervals") or {}
    for p in path:
        x = (x or {}).get(p)
    return x


DIFFERENCE_ROWS = (
    ("Average (of categories)", "average", 3),
    ("all pairs", "overall", 3),
    ("transformed (macro)", "transformed_macro_accuracy", 3),
    ("drop under transformation", "transformed_macro_drop", 3),
    ("cue: reward shift (spreads)", "cue_shift_in_spread", 2),
    ("cue on the rejected answer", "accuracy_cue_on_rejected", 3),
)


def difference_cell(d: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``+0.150 [0.05, 0.25] p=0.004 ✓``: the paired difference, its interval, its p-value, and
    a mark when the interval excludes zero."""
    if not d:
        return "–"
    mark = " ✓" if d["distinguishable"] else ""
    p = d["p_value"]
    shown = f"p<{d['p_resolution']:.2g}" if p == 0 and d.get("p_resolution") else f"p={p:.3f}"
    return f"{d['value']:+.{digits}f} [{d['low']:+.2f}, {d['high']:+.2f}] {shown}{mark}"


def _differences(doc: Mapping[str, Any]) -> list[str]:
    diff = doc.get("differences")
    if not diff:
        return []
    others = list(diff["models"])
    lines = [
        "",
        f"## Differences against {diff['baseline']}",
        "",
        "Each model minus the baseline on the same pairs: the paired bootstrap over prompts "
        f"({doc.get('bootstrap_reps', '?')} resamples), its 95% interval and two-sided p-value. "
        "✓: distinguishable from zero (the interval excludes 0); no ✓: at this many pairs the "
        "difference could be noise.",
        "",
        "| | " + " | ".join(f"{b} − {diff['baseline']}" for b in others) + " |",
        "|---" * (1 + len(others)) + "|",
    ]
    cats = sorted({c for d in diff["models"].values() for c in d["categories"]})
    rows = [(c, lambda d, c=c: d["categories"].get(c), 3) for c in cats]
    rows += [(name, lambda d, key=key: d.get(key), digits) for name, key, digits in DIFFERENCE_ROWS]
    for name, get, digits in rows:
        lines.append(
            f"| {name} | "
            + " | ".join(difference_cell(get(diff["models"][b]), digits) for b in others)
            + " |"
        )
    return lines


def _seed_cell(x: Mapping[str, Any] | None, interval: Mapping[str, Any] | None, digits: int) -> str:
    """``0.583 ± 0.021 [0.32, 0.81]``: the mean over seeds, its standard deviation across seeds,
    and the 95% interval over prompts of the seed-averaged values."""
    if not x:
        return "–"
    cell = f"{x['mean']:.{digits}f} ± {x['sd']:.{digits}f}"
    return cell + (f" [{interval['low']:.{max(digits - 1, 2)}f}, {interval['high']:.{max(digits - 1, 2)}f}]"
                   if interval else "")  # fmt: skip


def _seeds(doc: Mapping[str, Any]) -> list[str]:
    """Each model over its training seeds, and the between-model differences beside the
    between-seed ones (``evaluate.seeds``)."""
    from crome_ray.evaluate.seeds import beyond_seed_noise

    report = doc.get("seeds")
    if not report:
        return []
    models = report["models"]
    keys = DIFFERENCE_ROWS
    lines = [
        "",
        "## Across training seeds",
        "",
        "Each model that is a training run was trained once per seed on the same data (the tables "
        "above show its own seed). Mean ± standard deviation across seeds, and the 95% interval over "
        "prompts of the seed-averaged values.",
        "",
        "| model | seeds | " + " | ".join(name for name, _, _ in keys) + " |",
        "|---" * (2 + len(keys)) + "|",
    ]
    for label, m in models.items():
        seeds = ", ".join("own" if s is None else str(s) for s in m["seeds"])
        cells = [_seed_cell(m["metrics"].get(k), m["mean_intervals"].get(k), d) for _, k, d in keys]
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    between = report["between_models"]
    others = list(between["models"])
    within = [x for x in [between["baseline"], *others] if x in report["between_seeds"]]
    if not others:
        return lines
    lines += [
        "",
        f"Between models (on the seed means, paired over the same pairs) against between seeds (the "
        f"largest difference any two seeds of one model show on the same pairs). ★: the model "
        f"differs from {between['baseline']} (✓) by more than any reseed of either moved the number.",
        "",
        "| | "
        + " | ".join(f"{b} − {between['baseline']}" for b in others)
        + "".join(f" | {x}: seed to seed" for x in within)
        + " |",
        "|---" * (1 + len(others) + len(within)) + "|",
    ]
    for name, key, digits in keys:
        cells = []
        for b in others:
            cell = difference_cell(between["models"][b].get(key), digits)
            cells.append(cell + (" ★" if beyond_seed_noise(report, b, key) else ""))
        for x in within:
            largest = report["between_seeds"][x]["largest"].get(key)
            cells.append(f"{difference_cell(largest, digits)} (seeds {largest['seeds']})" if largest else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


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
        "rewardbench2": ((metrics.get("benchmarks") or {}).get("rewardbench2") or {}).get("score"),
        "rm_bench": ((metrics.get("benchmarks") or {}).get("rm_bench") or {}).get("average"),
        "intervals": {
            k: v
            for k, v in (metrics.get("intervals") or {}).items()
            if k not in ("subsets", "transformations")
        },
    }


def _unmapped(models: Mapping[str, Any]) -> list[str]:
    return sorted({u for m in models.values() for u in m.get("unmapped_subsets") or ()})


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
        row = [with_interval(m["categories"].get(c), _iv(m, "categories", c)) for c in cats]
        row += [
            with_interval(m["average"], _iv(m, "average")),
            with_interval(m["overall"], _iv(m, "overall")),
        ]
        row += [with_interval(m["transformed_macro_accuracy"], _iv(m, "transformed_macro_accuracy"))]
        row += [with_interval(m["transformed_macro_drop"], _iv(m, "transformed_macro_drop"))]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Each number with its 95% interval: Wilson for one proportion, else the bootstrap over prompts "
        "(a subset resampled within itself)."
        + (" Each model at its own seed; all its seeds below." if doc.get("seeds") else ""),
    ]
    lines += _differences(doc)
    lines += _seeds(doc)
    subsets = sorted({s for m in models.values() for s in m["subsets"]})
    lines += [
        "",
        "## Per subset",
        "",
        "Every subset of the data, in a category or not"
        + (f" (in none: {', '.join(f'`{u}`' for u in _unmapped(models))})" if _unmapped(models) else "")
        + ".",
        "",
        "| subset | pairs | " + " | ".join(labels) + " |",
        "|---" * (2 + len(labels)) + "|",
    ]
    for sub in subsets:
        pairs = next(m["subsets"][sub]["pairs"] for m in models.values() if sub in m["subsets"])
        cells = [
            with_interval(
                (models[x]["subsets"].get(sub) or {}).get("accuracy"), _iv(models[x], "subsets", sub)
            )
            for x in labels
        ]
        lines.append(f"| {sub} | {pairs} | " + " | ".join(cells) + " |")
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
                iv = _iv(models[label], "transformations", t) or {}
                cells.append(f"{with_interval(x['accuracy'], iv.get('accuracy'))} ({_fmt(x['drop'], 2)})")
                cells.append(with_interval(x["shift"]["mean_in_spread"], iv.get("shift_in_spread"), 2))
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
                m = models[label]
                lines.append(
                    f"| {label} | {_fmt(s['mean'])} "
                    f"| {with_interval(s['mean_in_spread'], _iv(m, 'cue_shift_in_spread'), 2)} "
                    f"| {_fmt(s['share_above'], 2)} "
                    f"| {with_interval(c['accuracy_cue_on_rejected'], _iv(m, 'accuracy_cue_on_rejected'))} "
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
    lines += _benchmarks(models)
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def _benchmarks(models: Mapping[str, Any]) -> list[str]:
    """RewardBench 2 and RM-Bench by their own rules (``evaluate.benchmarks``)."""
    lines: list[str] = []
    rb2 = {k: (m.get("benchmarks") or {}).get("rewardbench2") for k, m in models.items()}
    rb2 = {k: v for k, v in rb2.items() if v}
    if rb2:
        subsets = sorted({s for v in rb2.values() for s in v["subsets"]})
        lines += [
            "",
            "## RewardBench 2",
            "",
            "Its own rule: a row scores 1 when its first chosen answer outscores every rejected one "
            "(1/k on a k-way tie at the top); Ties is its composite of accuracy and margins (weights "
            "summing to 1.01, as published); the score is the mean of the subsets.",
            "",
            "| model | " + " | ".join([*subsets, "score"]) + " |",
            "|---" * (2 + len(subsets)) + "|",
        ]
        for label, v in rb2.items():
            cells = [with_interval(v["subsets"][x]["score"], v["subsets"][x].get("interval"))
                     if x in v["subsets"] else "–" for x in subsets]  # fmt: skip
            lines.append(f"| {label} | " + " | ".join([*cells, _fmt(v["score"])]) + " |")
        short = sorted({g for v in rb2.values() for g in v["incomplete_rows"]})
        if short:
            lines += [
                "",
                f"{len(short)} rows missing a pair (quarantined at ingest, or cut by `limit`): not scored.",
            ]
    rmb = {k: (m.get("benchmarks") or {}).get("rm_bench") for k, m in models.items()}
    rmb = {k: v for k, v in rmb.items() if v}
    if rmb:
        domains = sorted({d for v in rmb.values() for d in v["domains"]})
        lines += [
            "",
            "## RM-Bench",
            "",
            "Its own rule: each prompt's 3×3 styles (concise, detailed plain, detailed markdown), "
            "chosen strictly above rejected; hard = a plainer chosen answer against a fancier rejected "
            "one, normal = the same style, easy = the rest; a domain's score is the mean of the three.",
            "",
            "| model | " + " | ".join([*domains, "hard", "normal", "easy", "average"]) + " |",
            "|---" * (5 + len(domains)) + "|",
        ]
        for label, v in rmb.items():
            cells = [_fmt(v["domains"][d]["average"]) if d in v["domains"] else "–" for d in domains]
            cells += [_fmt(v[k]) for k in ("hard", "normal", "easy", "average")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        missing = sorted({d for v in rmb.values() for d in v["missing_domains"]})
        if missing:
            lines += [
                "",
                f"Domains not in the data: {', '.join(missing)} (the means are over the domains present).",
            ]
    return lines


Intervals = Mapping[str, Sequence[Mapping[str, Any] | None]]


def _bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    ylabel: str,
    intervals: Intervals | None = None,
) -> None:
    """Grouped bars, each with its 95% interval as an error bar where it has one."""
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        ys = [np.nan if v is None else v for v in values]
        ivs = (intervals or {}).get(label) or [None] * len(values)
        err = np.array(
            [
                [max(0.0, y - iv["low"]), max(0.0, iv["high"] - y)] if iv and y == y else [np.nan, np.nan]
                for y, iv in zip(ys, ivs, strict=True)
            ]
        ).T
        ax.bar(x + i * width - 0.4 + width / 2, ys, width, label=label)
        if np.isfinite(err).any():
            ax.errorbar(
                x + i * width - 0.4 + width / 2, ys, yerr=err, fmt="none", ecolor="black", capsize=3, lw=1
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
    intervals: Intervals | None = None,
) -> bytes:
    """Grouped bars, models side by side: accuracy (0..1, chance dashed) or a shift around 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 4.5))
    _bars(ax, groups, series, ylabel, intervals)
    if accuracy:
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
    else:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_title(title)
    return png_bytes(fig)


def _categories_plot(models: Mapping[str, Any]) -> bytes:
    """Accuracy per category and their average; per subset when no subset is in a category (a
    user's own held-out pairs)."""
    cats = sorted({c for m in models.values() for c in m["categories"]})
    if cats:
        groups = [*cats, "Average"]

        def value(m: Mapping[str, Any], g: str) -> Any:
            return m["average"] if g == "Average" else m["categories"].get(g)

        def interval(m: Mapping[str, Any], g: str) -> Any:
            return _iv(m, "average") if g == "Average" else _iv(m, "categories", g)

        title = "Accuracy per category (95% intervals)"
    else:
        groups = sorted({s for m in models.values() for s in m["subsets"]}) or ["(none)"]

        def value(m: Mapping[str, Any], g: str) -> Any:
            return (m["subsets"].get(g) or {}).get("accuracy")

        def interval(m: Mapping[str, Any], g: str) -> Any:
            return _iv(m, "subsets", g)

        title = "Accuracy per subset (no subset in a category; 95% intervals)"
    return _bar_plot(
        8,
        groups,
        {k: [value(m, g) for g in groups] for k, m in models.items()},
        "accuracy (ties ½)",
        title,
        accuracy=True,
        intervals={k: [interval(m, g) for g in groups] for k, m in models.items()},
    )


def plots(doc: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot of ``PLOTS``."""
    models: dict[str, Any] = doc["models"]
    names = sorted({t for m in models.values() for t in m["transformations"]})
    shifts = [*names, *(["planted cue"] if any("cue" in m for m in models.values()) else [])]

    def shift_of(m: Mapping[str, Any], g: str) -> float | None:
        found = m.get("cue") if g == "planted cue" else m["transformations"].get(g)
        return ((found or {}).get("shift") or {}).get("mean_in_spread")

    def shift_iv(m: Mapping[str, Any], g: str) -> Mapping[str, Any] | None:
        if g == "planted cue":
            return _iv(m, "cue_shift_in_spread")
        return _iv(m, "transformations", g, "shift_in_spread")

    return {
        "categories.png": _categories_plot(models),
        "transformations.png": _bar_plot(
            10,
            ["untransformed", *names],
            {
                k: [m["overall"]] + [(m["transformations"].get(t) or {}).get("accuracy") for t in names]
                for k, m in models.items()
            },
            "accuracy (ties ½)",
            "Accuracy per transformation (95% intervals)",
            accuracy=True,
            intervals={
                k: [_iv(m, "overall")] + [_iv(m, "transformations", t, "accuracy") for t in names]
                for k, m in models.items()
            },
        ),
        "shift.png": _bar_plot(
            10,
            shifts or ["(none)"],
            {k: [shift_of(m, g) for g in shifts] or [None] for k, m in models.items()},
            "mean r(T) − r, in reward spreads",
            "Reward shift per transformation (95% intervals)",
            accuracy=False,
            intervals={k: [shift_iv(m, g) for g in shifts] or [None] for k, m in models.items()},
        ),
    }


def write_report(folder: Any, doc: Mapping[str, Any]) -> dict[str, str]:
    """``report.json``, ``report.md``, the plots and ``report.html`` (the report with its plots
    inline) into ``folder`` (a storage Folder)."""
    from crome_ray.evaluate.html import PAGE, render, title_for

    written = {}
    text = markdown(doc)
    files = {
        "report.json": json.dumps(doc, indent=2, sort_keys=True, default=float).encode(),
        "report.md": text.encode(),
        **plots(doc),
        PAGE: render(text, title_for(folder.uri)).encode(),
    }
    for name, body in files.items():
        with folder.fs.open(folder.file(name), "wb") as f:
            f.write(body)
        written[name] = folder.uri_of(name)
    return written
