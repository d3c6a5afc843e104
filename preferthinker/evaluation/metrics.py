"""Metrics over per-sample prediction records (pure functions, seeded and deterministic).

Record schema
-------------
An evaluation run writes one JSON object per line (JSONL), one per model call:

================================  ====================  =============================================
key                               type                  meaning
================================  ====================  =============================================
``subset``                        str                   benchmark subset ("SP_ID", "PICKAPIC", ...)
``index``                         int                   sample position in its subset file
``pair_id``                       str                   id of the candidate pair; the swapped twin of a
                                                        sample carries the same ``pair_id``
``user_id``                       str | None            user (cluster for the bootstrap); None -> each
                                                        sample is its own cluster
``swapped``                       bool                  True when A/B were presented in swapped order
                                                        (position-bias twin); missing = False
``label``                         "Image A"|"Image B"   truth *in the orientation shown to the model*
``raw``                           str                   the model's full text
``answer``                        "Image A"|"Image B"|  parsed last ``<answer>``; None when absent.
                                  None                  Any other string is treated as None.
``format_ok``                     bool                  the full response template matched
``scores_a`` / ``scores_b``       list[int] | None      the 5 per-element scores (ELEMENTS order)
``total_a`` / ``total_b``         int | None            the totals the model wrote
``pred_preference``               dict | None           predicted preference profile
``pred_non_preference``           dict | None           predicted non-preference profile
``true_preference``               dict | None           ground-truth profiles (PreferImg only)
``true_non_preference``           dict | None
``true_scores_a``/``true_scores_b``  list[int], optional   ground-truth per-element scores
``error``                         str | None            set when the input was corrupt / the call failed;
                                                        such a record always counts as wrong
================================  ====================  =============================================

Conventions
-----------
* Headline numbers (``accuracy``, ``ci95``, profile metrics, ...) use the **unswapped** records only
  (``swapped`` false), i.e. the orientation of the benchmark file, as in the official evaluation.
  A missing/unparsable answer is wrong (official protocol), and so is any record with an ``error``.
* ``ci95`` is a percentile **cluster bootstrap over users**: user ids are resampled with replacement
  and the pooled (micro) accuracy recomputed; records without ``user_id`` form singleton clusters.
  ``macro_accuracy`` is the mean of per-user accuracies, with its own interval from the same resamples.
* Swapped twins (``swapped: true`` and the same ``pair_id`` as an unswapped record) give the
  position-bias numbers: ``position_consistency`` (same underlying winner in both orders; a missing
  answer is inconsistent), ``first_slot_win_rate`` (share of parsed answers that say "Image A",
  both orders pooled; ideal 0.5) and ``swap_avg_accuracy`` (per pair mean of the two orders'
  correctness).
* ``format_fail_rate`` is over the records that carry ``format_ok`` (None when none do, e.g. a
  score-based baseline that writes no text); ``parse_fail_rate`` is the share with no answer.
* Profile similarity is ×100 (like the paper's "Pred"); a missing prediction scores 0 in
  ``pred_similarity`` and is left out of ``pred_similarity_parsed``.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from preferthinker.profile import ELEMENTS
from preferthinker.response import ANSWERS

__all__ = [
    "DEFAULT_MARGIN_BINS",
    "accuracy_by_margin",
    "cluster_bootstrap",
    "metrics_by_subset",
    "paired_average_diff",
    "paired_bootstrap_diff",
    "read_records",
    "subset_metrics",
    "wilson_interval",
]

_FLIP = {"Image A": "Image B", "Image B": "Image A"}
# Lower edges of the |total_a - total_b| bins: [0,1) [1,2) [2,3) [3,5) [5,8) [8,inf).
DEFAULT_MARGIN_BINS: tuple[int, ...] = (0, 1, 2, 3, 5, 8)
_Z95 = 1.959963984540054


# --------------------------------------------------------------------------------------- helpers
def read_records(path: str | os.PathLike) -> list[dict]:
    """Load a JSONL file of prediction records (blank lines skipped)."""
    out: list[dict] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    return out


def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95% by default); (0, 1) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _answer(record: Mapping) -> str | None:
    a = record.get("answer")
    return a if a in ANSWERS else None


def _label(record: Mapping, i: int) -> str:
    lab = record.get("label")
    if lab not in ANSWERS:
        raise ValueError(f"record #{i} (subset={record.get('subset')!r}, index={record.get('index')!r}) "
                         f"has label {lab!r}; expected 'Image A' or 'Image B'")
    return lab


def _is_correct(record: Mapping, i: int) -> bool:
    label = _label(record, i)
    if record.get("error") is not None:
        return False
    return _answer(record) == label


def _swapped(record: Mapping) -> bool:
    return bool(record.get("swapped", False))


def _cluster_keys(records: Sequence[Mapping]) -> tuple[list[Any], str]:
    """User id per record; a record without one becomes its own cluster."""
    keys: list[Any] = []
    have_users = False
    for i, r in enumerate(records):
        uid = r.get("user_id")
        if uid is None or uid == "":
            keys.append(("__sample__", i))
        else:
            have_users = True
            keys.append(("user", str(uid)))
    return keys, ("user" if have_users else "sample")


def _group_sums(keys: Sequence[Any], *value_arrays: np.ndarray) -> tuple[list[Any], np.ndarray, list[np.ndarray]]:
    """Per-cluster counts and sums of each value array (clusters in first-appearance order)."""
    order: dict[Any, int] = {}
    idx = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        idx[i] = order.setdefault(k, len(order))
    n_clusters = len(order)
    counts = np.bincount(idx, minlength=n_clusters).astype(np.float64)
    sums = [np.bincount(idx, weights=np.asarray(v, dtype=np.float64), minlength=n_clusters) for v in value_arrays]
    return list(order), counts, sums


def cluster_bootstrap(
    counts: np.ndarray,
    sums: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Resample clusters with replacement ``n_boot`` times.

    Returns (resampled total counts, per value array: resampled micro means, resampled macro means).
    Every value array shares the same resampled cluster sets (so differences are paired).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_clusters = len(counts)
    rng = np.random.default_rng(seed)
    rates = [s / counts for s in sums]
    micro = [np.empty(n_boot) for _ in sums]
    macro = [np.empty(n_boot) for _ in sums]
    totals = np.empty(n_boot)
    chunk = max(1, min(512, 4_000_000 // max(n_clusters, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        pick = rng.integers(0, n_clusters, size=(b, n_clusters))
        tot = counts[pick].sum(axis=1)
        totals[done : done + b] = tot
        for j, (s, r) in enumerate(zip(sums, rates)):
            micro[j][done : done + b] = s[pick].sum(axis=1) / tot
            macro[j][done : done + b] = r[pick].mean(axis=1)
        done += b
    return totals, micro, macro


def _ci(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return float(np.mean(vals)) if vals else None


def _total(record: Mapping, side: str) -> int | None:
    t = record.get(f"total_{side}")
    if t is not None:
        return t
    scores = record.get(f"scores_{side}")
    if scores is not None and len(scores) == len(ELEMENTS) and all(s is not None for s in scores):
        return sum(scores)
    return None


def _format_fail_rate(records: Sequence[Mapping]) -> float | None:
    """Share of records whose ``format_ok`` is false, among those that carry the flag (None if none do)."""
    flags = [bool(r["format_ok"]) for r in records if r.get("format_ok") is not None]
    return (sum(not f for f in flags) / len(flags)) if flags else None


def _bin_label(lo: float, hi: float) -> str:
    if math.isinf(hi):
        return f"{int(lo)}+"
    if hi - lo == 1:
        return f"{int(lo)}"
    return f"{int(lo)}-{int(hi) - 1}"


# --------------------------------------------------------------------------------------- metrics
def accuracy_by_margin(
    records: Sequence[Mapping], bins: Sequence[int] = DEFAULT_MARGIN_BINS
) -> list[dict]:
    """Accuracy binned by the predicted totals margin ``|total_a - total_b|`` (unswapped records).

    ``bins`` are increasing lower edges; the last bin is open-ended. Records without totals are
    left out. Each row: ``{"bin", "lo", "hi", "n", "accuracy"}`` (accuracy None for an empty bin).
    """
    edges = [float(b) for b in bins] + [math.inf]
    if any(b >= c for b, c in zip(edges, edges[1:])):
        raise ValueError(f"margin bins must increase strictly, got {list(bins)}")
    rows = [{"bin": _bin_label(lo, hi), "lo": lo, "hi": hi, "n": 0, "correct": 0} for lo, hi in zip(edges, edges[1:])]
    for i, r in enumerate(records):
        if _swapped(r):
            continue
        ta, tb = _total(r, "a"), _total(r, "b")
        if ta is None or tb is None:
            continue
        margin = abs(float(ta) - float(tb))
        for row in rows:
            if row["lo"] <= margin < row["hi"]:
                row["n"] += 1
                row["correct"] += int(_is_correct(r, i))
                break
    out = []
    for row in rows:
        n = row["n"]
        out.append({
            "bin": row["bin"],
            "lo": row["lo"],
            "hi": None if math.isinf(row["hi"]) else row["hi"],
            "n": n,
            "accuracy": (row["correct"] / n) if n else None,
        })
    return out


def _position_metrics(records: Sequence[Mapping], n_boot: int, seed: int) -> dict:
    main: dict[str, tuple[int, Mapping]] = {}
    twin: dict[str, tuple[int, Mapping]] = {}
    for i, r in enumerate(records):
        pid = r.get("pair_id")
        if pid is None:
            continue
        target = twin if _swapped(r) else main
        target.setdefault(str(pid), (i, r))
    pairs = [(main[p], twin[p]) for p in main if p in twin]
    if not pairs:
        return {}
    consistent, avg_correct, keys = [], [], []
    first_slot = n_parsed = 0
    swapped_correct = []
    for (i, r0), (j, r1) in pairs:
        a0, a1 = _answer(r0), _answer(r1)
        if r0.get("error") is not None:
            a0 = None
        if r1.get("error") is not None:
            a1 = None
        consistent.append(a0 is not None and a1 is not None and a0 == _FLIP[a1])
        for a in (a0, a1):
            if a is not None:
                n_parsed += 1
                first_slot += a == "Image A"
        c0, c1 = _is_correct(r0, i), _is_correct(r1, j)
        swapped_correct.append(c1)
        avg_correct.append((c0 + c1) / 2.0)
        uid = r0.get("user_id")
        keys.append(("user", str(uid)) if uid not in (None, "") else ("__pair__", str(r0.get("pair_id"))))
    _, counts, (sums,) = _group_sums(keys, np.asarray(avg_correct))
    _, (micro,), _ = cluster_bootstrap(counts, [sums], n_boot, seed + 1)
    return {
        "n_swap_pairs": len(pairs),
        "position_consistency": float(np.mean(consistent)),
        "first_slot_win_rate": (first_slot / n_parsed) if n_parsed else None,
        "swap_avg_accuracy": float(np.mean(avg_correct)),
        "swap_avg_ci95": _ci(micro),
        "swapped_accuracy": float(np.mean(swapped_correct)),
    }


def _profile_metrics(main: Sequence[Mapping], embedder, compute_similarity: bool) -> dict:
    from preferthinker.similarity import exact_element_matches, profile_text_similarity

    out: dict[str, Any] = {}
    for side, suffix in (("preference", ""), ("non_preference", "_non")):
        rows = [r for r in main if r.get(f"true_{side}") is not None]
        if not rows:
            continue
        preds = [r.get(f"pred_{side}") for r in rows]
        trues = [r[f"true_{side}"] for r in rows]
        out[f"n_profiles{suffix}"] = len(rows)
        out[f"pred_coverage{suffix}"] = sum(p is not None for p in preds) / len(rows)
        if compute_similarity:
            sims = profile_text_similarity(embedder, preds, trues)
            out[f"pred_similarity{suffix}"] = 100.0 * float(np.mean([s if s is not None else 0.0 for s in sims]))
            parsed = [s for s in sims if s is not None]
            out[f"pred_similarity_parsed{suffix}"] = 100.0 * float(np.mean(parsed)) if parsed else None
        matches = [exact_element_matches(p, t) for p, t in zip(preds, trues)]
        out[f"element_match{suffix}"] = {e: float(np.mean([m[e] for m in matches])) for e in ELEMENTS}
        out[f"profile_exact_match{suffix}"] = float(np.mean([all(m.values()) for m in matches]))
    return out


def _score_agreement(main: Sequence[Mapping]) -> dict:
    rows = [r for r in main if r.get("true_scores_a") is not None and r.get("true_scores_b") is not None]
    if not rows:
        return {}
    agree = np.zeros((len(rows), len(ELEMENTS)), dtype=bool)
    for k, r in enumerate(rows):
        ta, tb = r["true_scores_a"], r["true_scores_b"]
        pa, pb = r.get("scores_a"), r.get("scores_b")
        if len(ta) != len(ELEMENTS) or len(tb) != len(ELEMENTS):
            raise ValueError(f"true_scores of record index={r.get('index')!r} must have {len(ELEMENTS)} entries")
        if pa is None or pb is None or len(pa) != len(ELEMENTS) or len(pb) != len(ELEMENTS):
            continue  # no usable prediction: disagreement on every element
        for e in range(len(ELEMENTS)):
            if pa[e] is None or pb[e] is None:
                continue
            agree[k, e] = np.sign(pa[e] - pb[e]) == np.sign(ta[e] - tb[e])
    return {
        "n_score_pairs": len(rows),
        "element_score_agreement": {e: float(agree[:, j].mean()) for j, e in enumerate(ELEMENTS)},
    }


def subset_metrics(
    records: Sequence[Mapping],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    embedder=None,
    compute_similarity: bool = True,
    margin_bins: Sequence[int] = DEFAULT_MARGIN_BINS,
) -> dict:
    """All metrics of one subset's records (see the module docstring for the schema).

    ``embedder``: a ``preferthinker.similarity.TextEmbedder`` for profile similarity (default: the
    shared MiniLM one, loaded only when predicted profiles are present); ``compute_similarity=False``
    skips the text similarity entirely.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    records = list(records)
    main = [r for r in records if not _swapped(r)]
    out: dict[str, Any] = {
        "n": len(main),
        "n_records": len(records),
        "n_swapped": len(records) - len(main),
    }
    if not main:
        out.update({"n_users": 0, "accuracy": None, "ci95": None, "parse_fail_rate": None,
                    "format_fail_rate": None, "n_errors": 0, "macro_accuracy": None, "macro_ci95": None})
        return out

    correct = np.array([_is_correct(r, i) for i, r in enumerate(main)], dtype=np.float64)
    labels = [_label(r, i) for i, r in enumerate(main)]
    answers = [_answer(r) for r in main]
    keys, unit = _cluster_keys(main)
    _, counts, (sums,) = _group_sums(keys, correct)
    n_users = len({k for k in keys if k[0] == "user"})
    _, (micro,), (macro,) = cluster_bootstrap(counts, [sums], n_boot, seed)
    per_user = sums / counts
    k = int(correct.sum())
    n = len(main)
    parsed = [a for a in answers if a is not None]

    out.update({
        "n_users": n_users,
        "n_clusters": int(len(counts)),
        "bootstrap_unit": unit,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "n_correct": k,
        "accuracy": k / n,
        "ci95": _ci(micro),
        "wilson95": list(wilson_interval(k, n)),
        "macro_accuracy": float(per_user.mean()),
        "macro_ci95": _ci(macro),
        "parse_fail_rate": sum(a is None for a in answers) / n,
        "format_fail_rate": _format_fail_rate(main),
        "n_errors": sum(r.get("error") is not None for r in main),
        "label_a_share": sum(lab == "Image A" for lab in labels) / n,
        "answer_a_share": (sum(a == "Image A" for a in parsed) / len(parsed)) if parsed else None,
    })
    out["error_rate"] = out["n_errors"] / n
    if unit == "user":
        q10, q50, q90 = np.percentile(per_user, [10, 50, 90])
        out["per_user_accuracy_quantiles"] = {"p10": float(q10), "p50": float(q50), "p90": float(q90)}
        out["users_above_chance"] = float(np.mean(per_user > 0.5))

    # totals: consistency of the written totals with the written answer, and accuracy by margin
    consistent = []
    for r, a in zip(main, answers):
        ta, tb = _total(r, "a"), _total(r, "b")
        if a is None or ta is None or tb is None or ta == tb:
            continue
        consistent.append((ta > tb) == (a == "Image A"))
    out["answer_total_consistency"] = _mean(consistent)
    margin = accuracy_by_margin(main, margin_bins)
    if any(row["n"] for row in margin):
        out["accuracy_by_margin"] = margin

    out.update(_position_metrics(records, n_boot, seed))
    out.update(_profile_metrics(main, embedder, compute_similarity))
    out.update(_score_agreement(main))
    return out


def metrics_by_subset(records: Iterable[Mapping], **kwargs) -> dict[str, dict]:
    """Group records by ``subset`` (first-appearance order) and run :func:`subset_metrics` on each."""
    groups: "OrderedDict[str, list[Mapping]]" = OrderedDict()
    for r in records:
        groups.setdefault(str(r.get("subset", "ALL")), []).append(r)
    return {name: subset_metrics(rows, **kwargs) for name, rows in groups.items()}


def _pair_key(record: Mapping) -> tuple:
    pid = record.get("pair_id")
    if pid is not None:
        return (record.get("subset"), "pair", str(pid))
    if record.get("index") is None:
        raise ValueError("a record without pair_id needs an index to be matched across systems")
    return (record.get("subset"), "index", int(record["index"]))


def _paired_rows(records_a: Sequence[Mapping], records_b: Sequence[Mapping]) -> list[tuple[int, Mapping, int, Mapping, tuple]]:
    """Unswapped pairs scored by both systems, matched on (subset, pair_id/index), first occurrence each:
    ``(i, record_a, j, record_b, cluster_key)`` with the cluster key the user (or the pair when no user id)."""
    index_b: dict[tuple, tuple[int, Mapping]] = {}
    for j, r in enumerate(records_b):
        if not _swapped(r):
            index_b.setdefault(_pair_key(r), (j, r))
    seen: set[tuple] = set()
    out = []
    for i, r in enumerate(records_a):
        if _swapped(r):
            continue
        key = _pair_key(r)
        if key in seen or key not in index_b:
            continue
        seen.add(key)
        j, rb = index_b[key]
        uid = r.get("user_id") if r.get("user_id") not in (None, "") else rb.get("user_id")
        out.append((i, r, j, rb, ("user", str(uid)) if uid not in (None, "") else ("__pair__", key)))
    return out


def paired_similarity_diff(records_a: Sequence[Mapping], records_b: Sequence[Mapping], embedder, n_boot: int = 2000,
                           seed: int = 0, side: str = "preference") -> dict | None:
    """Profile similarity ("Pred", x100) difference A - B on the unswapped pairs both systems scored, with the
    same user-clustered bootstrap as ``paired_bootstrap_diff``. An unparsed profile scores 0 (as in Pred).
    None when the records carry no true profile."""
    vals = _paired_values(records_a, records_b, "pred", embedder, side)
    if vals is None:
        return None
    sa, sb, keys = vals
    _, counts, (ga, gb) = _group_sums(keys, sa, sb)
    _, (ma, mb), _ = cluster_bootstrap(counts, [ga, gb], n_boot, seed)
    ci = _ci(ma - mb)
    return {"diff": float(sa.mean() - sb.mean()), "ci95": ci, "pred_a": float(sa.mean()), "pred_b": float(sb.mean()),
            "n": int(len(sa)), "significant": bool(ci[0] > 0 or ci[1] < 0), "n_boot": int(n_boot), "seed": int(seed)}


def paired_bootstrap_diff(
    records_a: Sequence[Mapping],
    records_b: Sequence[Mapping],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Accuracy difference A - B on the pairs both systems answered (unswapped records).

    Pairs are matched on (subset, pair_id) (or (subset, index) without a pair_id). The same
    resampled user set is applied to both systems; a difference whose ``ci95`` excludes 0 is
    flagged ``significant``. ``p_boot`` is a rough two-sided bootstrap p-value.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    vals = _paired_values(records_a, records_b, "accuracy")
    if vals is None:
        raise ValueError("the two record sets share no pair (matched on subset + pair_id/index)")
    a, b, keys = vals
    _, counts, (sa, sb) = _group_sums(keys, a, b)
    _, (ma, mb), (macro_a, macro_b) = cluster_bootstrap(counts, [sa, sb], n_boot, seed)
    boot = ma - mb
    ci = _ci(boot)
    diff = float(a.mean() - b.mean())
    p = 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))
    return {
        "diff": diff,
        "ci95": ci,
        "acc_a": float(a.mean()),
        "acc_b": float(b.mean()),
        "n": int(len(a)),
        "n_users": int(sum(1 for k in dict.fromkeys(keys) if k[0] == "user")),
        "macro_diff": float((sa / counts).mean() - (sb / counts).mean()),
        "macro_ci95": _ci(macro_a - macro_b),
        "significant": bool(ci[0] > 0 or ci[1] < 0),
        "p_boot": min(1.0, p),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


def _paired_values(records_a: Sequence[Mapping], records_b: Sequence[Mapping], metric: str, embedder=None,
                   side: str = "preference") -> tuple[np.ndarray, np.ndarray, list] | None:
    """Per matched pair, the two systems' values of ``metric`` and the pair's cluster key: ``accuracy`` (1/0, an
    unparsed answer wrong) or ``pred`` (profile similarity x100, an unparsed profile 0). None when nothing is
    comparable (no shared pair; for ``pred``, no true profile)."""
    rows = _paired_rows(records_a, records_b)
    if metric == "accuracy":
        a = [_is_correct(r, i) for i, r, _, _, _ in rows]
        b = [_is_correct(rb, j) for _, _, j, rb, _ in rows]
    elif metric == "pred":
        from preferthinker.similarity import profile_text_similarity

        rows = [row for row in rows if row[1].get(f"true_{side}") is not None]
        truths = [r[f"true_{side}"] for _, r, _, _, _ in rows]

        def pred(profiles: list) -> list[float]:
            return [100.0 * (s or 0.0) for s in profile_text_similarity(embedder, profiles, truths)] if rows else []

        a = pred([r.get(f"pred_{side}") for _, r, _, _, _ in rows])
        b = pred([rb.get(f"pred_{side}") for _, _, _, rb, _ in rows])
    else:
        raise ValueError(f"metric must be 'accuracy' or 'pred', got {metric!r}")
    if not rows:
        return None
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), [row[-1] for row in rows]


def paired_average_diff(
    records_a: Mapping[str, Sequence[Mapping]],
    records_b: Mapping[str, Sequence[Mapping]],
    metric: str = "accuracy",
    embedder=None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict | None:
    """A - B on the **unweighted mean over subsets** (the tables' "Avg." column) of ``metric`` (``accuracy``,
    a fraction; ``pred``, x100), with a paired, user-clustered, subset-stratified bootstrap: in each replicate
    every subset's users are resampled with replacement (users belong to one subset, so the subsets are
    independent strata) and the same resampled users score both systems. Only subsets both systems scored
    count; ``subsets`` names them with their own point differences. ``significant``: the 95 % interval
    excludes 0. None when no subset is comparable."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    per: dict[str, float] = {}
    boot = np.zeros(n_boot)
    n = n_users = 0
    for k, subset in enumerate(s for s in records_a if s in records_b):
        vals = _paired_values(records_a[subset], records_b[subset], metric, embedder)
        if vals is None:
            continue
        a, b, keys = vals
        _, counts, (sa, sb) = _group_sums(keys, a, b)
        _, (ma, mb), _ = cluster_bootstrap(counts, [sa, sb], n_boot, seed + 7919 * k)  # a stream per stratum
        boot += ma - mb
        per[subset] = float(a.mean() - b.mean())
        n += len(a)
        n_users += int(sum(1 for key in dict.fromkeys(keys) if key[0] == "user"))
    if not per:
        return None
    boot /= len(per)
    ci = _ci(boot)
    p = 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))
    return {"metric": metric, "diff": float(np.mean(list(per.values()))), "ci95": ci, "subsets": per, "n": int(n),
            "n_users": int(n_users), "significant": bool(ci[0] > 0 or ci[1] < 0), "p_boot": min(1.0, p),
            "n_boot": int(n_boot), "seed": int(seed)}
