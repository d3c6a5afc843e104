"""Accuracy and parse failures by reference count (``bench.refs_sweep``, issue #27).

A user rarely has five liked and five disliked images. With ``bench.refs_sweep=[1,2,3,5]`` the evaluation
scores the checkpoint again with the first ``k`` references per side (the official script's ``[:5]``
slicing, cut to ``k``: deterministic, the same for every run) for each ``k``, on the unswapped pairs of every
subset. Each count's predictions go to their own files (``predictions/model_refs<k>/``), so a stopped run
resumes per count; the count equal to ``prompt.max_refs`` reuses the main predictions.

Reported per subset and count (``results.json`` ``refs_sweep: {subset: {"k": {...}}}``): accuracy with the
user-clustered bootstrap 95 % interval (as every accuracy in the report), the parse-failure rate (no readable
``<answer>``), the format-failure rate and the error rate; ``results.md`` gets a table and
``accuracy_by_refs.png`` the two curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_SWEEP_COUNT = 64
_KEYS = ("n", "n_users", "accuracy", "ci95", "parse_fail_rate", "format_fail_rate", "error_rate")


def parse_sweep(value: Any) -> list[int] | None:
    """``bench.refs_sweep`` -> sorted distinct counts, or None (off). A ValueError names the key otherwise."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool, int)) or not isinstance(value, Sequence):
        raise ValueError(f"bench.refs_sweep: expected null or a list of reference counts such as [1, 2, 3, 5], got {value!r}")
    counts = list(value)
    bad = [c for c in counts if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_SWEEP_COUNT]
    if not counts or bad:
        raise ValueError(f"bench.refs_sweep: counts must be integers in 1..{MAX_SWEEP_COUNT} (references per side), "
                         f"got {counts!r}")
    return sorted(set(counts))


def sweep_entry(metrics: Mapping[str, Any], k: int) -> dict:
    """The summary of one subset's metrics at ``k`` references per side."""
    out = {key: metrics.get(key) for key in _KEYS}
    out["refs"] = k
    n = metrics.get("n") or 0
    out["parse_failures"] = round((metrics.get("parse_fail_rate") or 0.0) * n)
    return out


def sweep_results(metrics_by_count: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict]]:
    """{k: {subset: subset_metrics}} -> {subset: {str(k): entry}} (string keys: JSON object keys)."""
    out: dict[str, dict[str, dict]] = {}
    for k in sorted(metrics_by_count):
        for subset, m in metrics_by_count[k].items():
            out.setdefault(subset, {})[str(k)] = sweep_entry(m, k)
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * x:.1f}"


def sweep_table(sweep: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str | None:
    """Markdown: one row per subset and count (accuracy [95 % CI], parse failures, format failures, pairs)."""
    if not sweep:
        return None
    lines = ["| Subset | refs per side | accuracy (%) [95% CI] | parse failures (%) | format failures (%) | pairs | users |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for subset, per in sweep.items():
        for k in sorted(per, key=int):
            e = per[k]
            ci = e.get("ci95") or [None, None]
            acc = _pct(e.get("accuracy")) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci and ci[0] is not None else "")
            lines.append(f"| {subset} | {k} | {acc} | {_pct(e.get('parse_fail_rate'))} | {_pct(e.get('format_fail_rate'))} | "
                         f"{e.get('n', '–')} | {e.get('n_users', '–')} |")
    return "\n".join(lines) + ("\n\nThe first k references of each side (the official [:5] slicing cut to k), unswapped pairs; a "
                               "missing answer counts as wrong and as a parse failure.\n")


def plot_sweep(sweep: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> bool:
    """Two panels, one line per subset: accuracy (with its 95 % interval as error bars) and the parse-failure
    rate against the reference count. False (nothing written) when there is no sweep."""
    if not sweep:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax_acc, ax_fail = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for c, (subset, per) in enumerate(sweep.items()):
        ks = sorted(per, key=int)
        xs = [int(k) for k in ks]
        acc = [per[k].get("accuracy") for k in ks]
        if any(a is not None for a in acc):
            ys = [100 * a if a is not None else float("nan") for a in acc]
            err = [[max(0.0, y - 100 * (per[k].get("ci95") or [a, a])[0]) if a is not None else 0.0 for k, a, y in zip(ks, acc, ys)],
                   [max(0.0, 100 * (per[k].get("ci95") or [a, a])[1] - y) if a is not None else 0.0 for k, a, y in zip(ks, acc, ys)]]
            ax_acc.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{c % 10}", label=subset)
        fails = [100 * (per[k].get("parse_fail_rate") or 0.0) for k in ks]
        ax_fail.plot(xs, fails, marker="o", color=f"C{c % 10}", label=subset)
    ax_acc.axhline(50, color="0.6", ls="--", lw=1)
    for ax, title, ylabel in ((ax_acc, "Accuracy by reference count", "accuracy (%)"),
                              (ax_fail, "Parse failures by reference count", "no readable answer (%)")):
        ax.set_xlabel("references per side")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({int(k) for per in sweep.values() for k in per}))
    ax_acc.set_ylim(0, 100)
    ax_fail.set_ylim(bottom=0)
    ax_acc.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    return True
