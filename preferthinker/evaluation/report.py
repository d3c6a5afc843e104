"""Write an evaluation run's results: ``results.json``, ``results.md`` (paper-style table) and PNG plots.

``results`` passed to :func:`write_report`::

    {
      "system": "PreferThinker-7B",            # optional display name of the main system
      "subsets": {"SP_ID": {<subset_metrics output>}, "PICKAPIC": {...}, ...},
      "systems": {"PickScore": {"subsets": {...}}, ...},   # optional: more systems, side by side
      "comparisons": {"PreferThinker - PickScore": {<paired_bootstrap_diff output>}},  # optional
      ...any other top-level metadata (model path, seed, date, decoding settings)
    }

At least one of ``subsets`` / ``systems`` is required. Plots are drawn on matplotlib ``Figure`` objects
with the Agg canvas, so no pyplot state or display is involved.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from preferthinker.profile import ELEMENTS

__all__ = ["SUBSET_ORDER", "markdown_table", "systems_of", "write_report"]

# Column order of the paper's Table 1 (Seen-SP, Seen-MP, Unseen-SP, Unseen-MP, PickaPic).
SUBSET_ORDER: tuple[str, ...] = ("SP_ID", "MP_ID", "SP_OD", "MP_OD", "PICKAPIC")
SUBSET_ALIASES: dict[str, str] = {
    "SP_ID": "Seen-SP", "MP_ID": "Seen-MP", "SP_OD": "Unseen-SP", "MP_OD": "Unseen-MP", "PICKAPIC": "PickaPic",
}


def _base_name(subset: str) -> str:
    name = subset.upper()
    return name[5:] if name.startswith("TEST_") else name


def _ordered_subsets(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for subsets in systems.values():
        for name in subsets:
            if name not in seen:
                seen.append(name)
    rank = {s: i for i, s in enumerate(SUBSET_ORDER)}
    return sorted(seen, key=lambda s: (rank.get(_base_name(s), len(rank)), seen.index(s)))


def systems_of(results: Mapping[str, Any]) -> "OrderedDict[str, dict]":
    """``{system name: {subset: metrics}}`` from a results dict (main system first)."""
    systems: OrderedDict[str, dict] = OrderedDict()
    if results.get("subsets") is not None:
        name = next((str(results[k]) for k in ("system", "model_name", "run_name", "model") if results.get(k)), "model")
        systems[name] = dict(results["subsets"])
    for name, entry in (results.get("systems") or {}).items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"results['systems'][{name!r}] must be a dict, got {type(entry).__name__}")
        systems[str(name)] = dict(entry.get("subsets", entry))
    if not systems:
        raise ValueError("results need a 'subsets' dict (main system) or a 'systems' dict")
    return systems


def _json_default(obj: Any):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _sanitize(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _sanitize(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return _finite(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * x:.1f}"


def _acc_cell(metrics: Mapping[str, Any] | None) -> str:
    if not metrics or metrics.get("accuracy") is None:
        return "–"
    cell = _pct(metrics["accuracy"])
    ci = metrics.get("ci95")
    if ci and ci[0] is not None and ci[1] is not None:
        cell += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return cell


def markdown_table(
    rows: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    systems: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
    with_pred: bool = False,
) -> str:
    """Paper-style accuracy table: one row per system, a column per subset plus ``Avg.``.

    Cells are accuracy in % with one decimal and the 95% CI in brackets. ``Avg.`` is the unweighted
    mean over the subsets the system has; it is starred when the system lacks some columns.

    Args:
        rows: ``{system: {subset: metrics}}`` (``systems_of(results)``).
        systems: which systems, in this order (names absent from ``rows`` are skipped); default all.
        names: display names for some systems (Hydra keys cannot hold ``+``: ``{"SFT_RL": "SFT+RL"}``).
        with_pred: add a ``Pred`` column after each subset: the profile similarity (``pred_similarity``,
            x100) of the ablation table.
    """
    order = [s for s in (systems if systems is not None else rows) if s in rows]
    subsets = _ordered_subsets({s: rows[s] for s in order})
    header = ["System"]
    for s in subsets:
        header += [s, "Pred"] if with_pred else [s]
    header.append("Avg.")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for system in order:
        per_subset = rows[system]
        cells = [str((names or {}).get(system, system))]
        accs = []
        for s in subsets:
            m = per_subset.get(s)
            cells.append(_acc_cell(m))
            if with_pred:
                pred = (m or {}).get("pred_similarity")
                cells.append(f"{pred:.1f}" if isinstance(pred, (int, float)) and math.isfinite(pred) else "–")
            if m and m.get("accuracy") is not None:
                accs.append(float(m["accuracy"]))
        avg = "–"
        if accs:
            avg = f"{100 * float(np.mean(accs)):.1f}" + ("*" if len(accs) < len(subsets) else "")
        cells.append(avg)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x: Any, pct: bool = False, digits: int = 1) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{100 * float(x):.{digits}f}"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _details_table(subsets: Mapping[str, Mapping[str, Any]]) -> str:
    cols = [
        ("n", lambda m: _fmt(m.get("n"))),
        ("users", lambda m: _fmt(m.get("n_users"))),
        ("Acc %", lambda m: _acc_cell(m)),
        ("Macro acc %", lambda m: _fmt(m.get("macro_accuracy"), True)
            + (f" [{100 * m['macro_ci95'][0]:.1f}, {100 * m['macro_ci95'][1]:.1f}]" if m.get("macro_ci95") else "")),
        ("Parse fail %", lambda m: _fmt(m.get("parse_fail_rate"), True)),
        ("Format fail %", lambda m: _fmt(m.get("format_fail_rate"), True)),
        ("Errors", lambda m: _fmt(m.get("n_errors"))),
        ("Pos. consistency %", lambda m: _fmt(m.get("position_consistency"), True)),
        ("First-slot wins %", lambda m: _fmt(m.get("first_slot_win_rate"), True)),
        ("Swap-avg acc %", lambda m: _fmt(m.get("swap_avg_accuracy"), True)),
        ("Pred", lambda m: _fmt(m.get("pred_similarity"))),
        ("Pred (non)", lambda m: _fmt(m.get("pred_similarity_non"))),
    ]
    order = _ordered_subsets({"_": subsets})
    lines = ["| Subset | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in order:
        m = subsets[s] or {}
        lines.append(f"| {s} | " + " | ".join(f(m) for _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def _element_table(subsets: Mapping[str, Mapping[str, Any]]) -> str | None:
    keys = [("element_score_agreement", "score sign agreement"), ("element_match", "pref. exact match"),
            ("element_match_non", "non-pref. exact match")]
    lines = []
    for s in _ordered_subsets({"_": subsets}):
        m = subsets[s] or {}
        for key, label in keys:
            vals = m.get(key)
            if vals:
                lines.append(f"| {s} | {label} | " + " | ".join(_fmt(vals.get(e), True) for e in ELEMENTS) + " |")
    if not lines:
        return None
    head = "| Subset | Measure | " + " | ".join(ELEMENTS) + " |\n|---|---|" + "---:|" * len(ELEMENTS)
    return head + "\n" + "\n".join(lines) + "\n"


def _metadata_lines(results: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in results.items():
        if k in ("subsets", "systems", "comparisons", "pred_comparisons", "average_comparisons"):
            continue
        if isinstance(v, (str, int, float, bool)) or v is None:
            out.append(f"- **{k}**: {v}")
        else:
            out.append(f"- **{k}**: `{json.dumps(_sanitize(v), default=_json_default)}`")
    return out


def _markdown(results: Mapping[str, Any], systems: Mapping[str, dict], plots: Mapping[str, Path]) -> str:
    parts = ["# Evaluation results", ""]
    meta = _metadata_lines(results)
    if meta:
        parts += meta + [""]
    parts += [
        "## Accuracy (%)",
        "",
        markdown_table(systems),
        "Cells: accuracy on the unswapped pairs (a missing answer counts as wrong) with the 95% interval "
        "of a user-clustered bootstrap in brackets. Avg.: unweighted mean over subsets (* = some subsets missing). "
        "Paper names: " + ", ".join(f"{k} = {v}" for k, v in SUBSET_ALIASES.items()) + ".",
        "",
    ]
    for name, subsets in systems.items():
        parts += [f"## Details: {name}", "", _details_table(subsets)]
        elem = _element_table(subsets)
        if elem:
            parts += [f"### Per-element results (%): {name}", "", elem]
    comparisons = results.get("comparisons")
    if comparisons:
        parts += ["## Paired comparisons (same pairs, same resampled users)", "",
                  "| Comparison | Subset | Δ acc (points) | 95% CI | n | users | significant |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for label, entry in comparisons.items():
            # either one paired_bootstrap_diff result, or {subset: result}
            items = [("all", entry)] if isinstance(entry, Mapping) and "diff" in entry else list((entry or {}).items())
            for subset, c in items:
                if not isinstance(c, Mapping) or c.get("diff") is None:
                    continue
                parts.append(f"| {label} | {subset} | {100 * c['diff']:+.1f} | {_ci_txt(c.get('ci95'), 100.0)} | {c.get('n', '–')} | "
                             f"{c.get('n_users', '–')} | {'yes' if c.get('significant') else 'no'} |")
        parts.append("")
    parts += _pred_comparison_lines(results.get("pred_comparisons") or {})
    parts += _average_comparison_lines(results.get("average_comparisons") or {})
    from preferthinker.evaluation.refs_sweep import sweep_table

    sweep = sweep_table(results.get("refs_sweep") or {})
    if sweep:
        parts += [f"## By reference count: {next(iter(systems))}", "", sweep]
    cal = _calibration_table(systems[next(iter(systems))], results.get("calibration") or {})
    if cal:
        parts += ["## Calibration of P(A preferred over B)", "", cal]
    if plots:
        parts += ["## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()] + [""]
    return "\n".join(parts)


def _ci_txt(ci: Sequence[float] | None, scale: float) -> str:
    return f"[{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]" if ci and ci[0] is not None else "–"


def _pred_comparison_lines(pred: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per-subset paired Pred differences (profile similarity x100) as a table."""
    rows = [f"| {label} | {subset} | {c['diff']:+.1f} | {_ci_txt(c.get('ci95'), 1.0)} | {c.get('n', '–')} | "
            f"{'yes' if c.get('significant') else 'no'} |"
            for label, per in pred.items() for subset, c in (per or {}).items() if isinstance(c, Mapping) and c.get("diff") is not None]
    if not rows:
        return []
    return ["## Paired comparisons of Pred (profile similarity x100, same pairs, same resampled users)", "",
            "| Comparison | Subset | Δ Pred | 95% CI | n | significant |", "|---|---|---:|---:|---:|---|", *rows, ""]


def _average_comparison_lines(avg: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The Avg. column compared between two systems (paired, user-clustered, subset-stratified bootstrap)."""
    rows = []
    for label, entry in avg.items():
        for metric, c in (entry or {}).items():
            if not isinstance(c, Mapping) or c.get("diff") is None:
                continue
            scale = 100.0 if metric == "accuracy" else 1.0
            per = ", ".join(f"{k} {scale * v:+.1f}" for k, v in (c.get("subsets") or {}).items())
            rows.append(f"| {label} | {metric} | {scale * c['diff']:+.1f} | {_ci_txt(c.get('ci95'), scale)} | {per} | "
                        f"{c.get('n_users', '–')} | {'yes' if c.get('significant') else 'no'} |")
    if not rows:
        return []
    return ["## Paired comparisons of the average over subsets", "",
            "Δ of the unweighted mean over subsets (accuracy in points, Pred x100); 95 % interval of a paired bootstrap "
            "that resamples each subset's users (the same users for both systems).", "",
            "| Comparison | metric | Δ avg | 95% CI | Δ per subset | users | significant |",
            "|---|---|---:|---:|---|---:|---|", *rows, ""]


def _calibration_table(subsets: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str | None:
    rows = [(s, m["calibration"]) for s, m in subsets.items() if isinstance(m, Mapping) and m.get("calibration")]
    if not rows:
        return None
    how = ("fitted in this run on a share of the users; reported on the other users" if summary.get("fitted")
           else summary.get("source", ""))
    lines = ["| Subset | pairs | ECE | Brier | bins | calibrated |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {s} | {c['n']} | {c['ece']:.3f} | {c['brier']:.3f} | {c['n_bins']} | {'yes' if c['calibrated'] else 'no'} |"
              for s, c in rows]
    pooled = summary.get("pooled")
    if pooled:
        lines.append(f"| all (pooled) | {pooled['n']} | {pooled['ece']:.3f} | {pooled['brier']:.3f} | {pooled['n_bins']} | "
                     f"{'yes' if pooled['calibrated'] else 'no'} |")
    return "\n".join(lines) + f"\n\nProbability from both orders' answer log-odds, votes and totals' margin ({how}).\n"


def _plot_reliability(subsets: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    """Reliability diagram: per subset, observed frequency of "Image A preferred" against the mean
    predicted probability in each bin (marker area ~ pairs in the bin); the diagonal is perfect."""
    rows = [(s, m["calibration"]) for s, m in subsets.items() if isinstance(m, Mapping) and m.get("calibration")]
    if not rows:
        return False
    fig, (ax,) = _new_figure(4.8, 4.6)
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfect")
    for k, (subset, c) in enumerate(rows):
        bins = c.get("bins") or []
        ax.plot([b["mean_p"] for b in bins], [b["freq"] for b in bins], "-", color=f"C{k % 10}", lw=1, alpha=0.7)
        ax.scatter([b["mean_p"] for b in bins], [b["freq"] for b in bins], s=[12 + 4 * b["n"] for b in bins],
                   color=f"C{k % 10}", alpha=0.8, label=f"{subset} (ECE {c['ece']:.3f}, n={c['n']})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(Image A preferred)")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability diagram", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True


# --------------------------------------------------------------------------------------- plots
def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _plot_accuracy(systems: Mapping[str, dict], path: Path) -> bool:
    subsets = _ordered_subsets(systems)
    if not subsets:
        return False
    names = list(systems)
    width = 0.8 / len(names)
    fig, (ax,) = _new_figure(max(5.0, 1.3 * len(subsets) * max(1, len(names)) ** 0.5 + 2.5), 4.2)
    x = np.arange(len(subsets))
    colors = [f"C{i % 10}" for i in range(len(names))]
    for k, name in enumerate(names):
        accs, lo_err, hi_err = [], [], []
        for s in subsets:
            m = systems[name].get(s) or {}
            acc = m.get("accuracy")
            ci = m.get("ci95")
            if acc is None:
                accs.append(np.nan)
                lo_err.append(0.0)
                hi_err.append(0.0)
                continue
            accs.append(100 * acc)
            lo_err.append(max(0.0, 100 * (acc - ci[0])) if ci else 0.0)
            hi_err.append(max(0.0, 100 * (ci[1] - acc)) if ci else 0.0)
        pos = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, accs, width * 0.92, yerr=[lo_err, hi_err], capsize=3, color=colors[k],
                      label=name, error_kw={"elinewidth": 1, "ecolor": "0.2"})
        for b, a, h in zip(bars, accs, hi_err):
            if not np.isnan(a):
                ax.text(b.get_x() + b.get_width() / 2, a + h + 1, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(50, color="0.4", ls="--", lw=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s}\n({SUBSET_ALIASES[_base_name(s)]})" if _base_name(s) in SUBSET_ALIASES else s
                        for s in subsets], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 108)
    ax.set_title("Accuracy per subset (95% CI, user-clustered bootstrap)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    return True


def _plot_elements(subsets: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    measures = [(k, t) for k, t in (("element_score_agreement", "Score sign agreement (A vs B)"),
                                    ("element_match", "Preference profile: exact match"),
                                    ("element_match_non", "Non-preference profile: exact match"))
                if any((subsets[s] or {}).get(k) for s in subsets)]
    if not measures:
        return False
    order = _ordered_subsets({"_": subsets})
    fig, axes = _new_figure(4.6 * len(measures), 4.0, ncols=len(measures))
    x = np.arange(len(ELEMENTS))
    for ax, (key, title) in zip(axes, measures):
        have = [s for s in order if (subsets[s] or {}).get(key)]
        width = 0.8 / max(1, len(have))
        for k, s in enumerate(have):
            vals = [100 * subsets[s][key].get(e, np.nan) for e in ELEMENTS]
            ax.bar(x - 0.4 + width * (k + 0.5), vals, width * 0.92, label=s, color=f"C{order.index(s) % 10}")
        ax.set_xticks(x)
        ax.set_xticklabels([e.replace(" ", "\n") for e in ELEMENTS], fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    return True


def _plot_margin(subsets: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    order = _ordered_subsets({"_": subsets})
    have = [s for s in order if (subsets[s] or {}).get("accuracy_by_margin")]
    if not have:
        return False
    labels: list[str] = []
    for s in have:
        for row in subsets[s]["accuracy_by_margin"]:
            if row.get("n") and row["bin"] not in labels:
                labels.append(row["bin"])
    if not labels:
        return False
    pos = {b: i for i, b in enumerate(labels)}
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.2), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax_n = fig.add_subplot(grid[1], sharex=ax)
    width = 0.8 / len(have)
    for k, s in enumerate(have):
        rows = [r for r in subsets[s]["accuracy_by_margin"] if r.get("n") and r.get("accuracy") is not None]
        if not rows:
            continue
        xs = [pos[r["bin"]] for r in rows]
        color = f"C{order.index(s) % 10}"
        ax.plot(xs, [100 * r["accuracy"] for r in rows], marker="o", color=color, label=s)
        ax_n.bar([x - 0.4 + width * (k + 0.5) for x in xs], [r["n"] for r in rows], width * 0.9, color=color)
    ax.axhline(50, color="0.4", ls="--", lw=1)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Accuracy against the predicted totals margin", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    ax.tick_params(labelbottom=False)
    ax_n.set_xticks(range(len(labels)))
    ax_n.set_xticklabels(labels)
    ax_n.set_xlabel("|total A − total B| written by the model")
    ax_n.set_ylabel("pairs")
    ax_n.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.93, bottom=0.11)
    fig.savefig(path)
    return True


def write_report(results: Mapping[str, Any], run_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and the plots into ``run_dir``; returns {kind: path} of files written."""
    from preferthinker.evaluation.refs_sweep import plot_sweep

    systems = systems_of(results)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    json_path = run_dir / "results.json"
    json_path.write_text(json.dumps(_sanitize(dict(results)), indent=2, default=_json_default, allow_nan=False) + "\n",
                         encoding="utf-8")
    written["json"] = json_path

    main_name = next(iter(systems))
    plots: dict[str, Path] = {}
    for kind, fname, fn, arg in (("accuracy_plot", "accuracy_per_subset.png", _plot_accuracy, systems),
                                 ("element_plot", "element_agreement.png", _plot_elements, systems[main_name]),
                                 ("margin_plot", "accuracy_by_margin.png", _plot_margin, systems[main_name]),
                                 ("reliability_plot", "reliability.png", _plot_reliability, systems[main_name]),
                                 ("refs_plot", "accuracy_by_refs.png", plot_sweep, results.get("refs_sweep") or {})):
        path = run_dir / fname
        if fn(arg, path):
            plots[kind] = path

    md_path = run_dir / "results.md"
    md_path.write_text(_markdown(results, systems, plots), encoding="utf-8")
    written["markdown"] = md_path
    written.update(plots)
    return written
