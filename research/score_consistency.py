"""Where does a checkpoint's pairwise answer go wrong: reading the images, adding up, or answering?

Reads the per-pair predictions that ``scripts/eval.py`` writes (``<run>/predictions/<system>/<SUBSET>.rank*.jsonl``,
on synthetic data, which carries the true per-element scores) and reports, per subset, over both A/B orders:

* ``answer``: accuracy of the written answer (a missing answer counts half, like a coin flip);
* ``totals right``: responses whose two ``total_score`` lines equal the sums of their own five score lines;
* ``follows totals``: answers that pick the higher written total (pairs with unequal totals);
* counterfactual decisions, each "pick the candidate with the higher sum" (ties count half):
  ``own 5`` the model's own five scores; ``own w/o <E>`` its scores without element E; ``own + true <E>`` its
  scores with element E replaced by the true one; ``true w/o <E>`` the true scores without E.

So ``own 5`` is what perfect adding-up and answering would reach with the scores the model wrote, and the
``own + true <E>`` columns say how much reading element E right would add.

    python research/score_consistency.py outputs/eval/<run>/predictions/model
    python research/score_consistency.py RUN_A/predictions/model RUN_B/predictions/model --elements Detail "Art Styles"
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from preferthinker.evaluation.metrics import read_records
from preferthinker.profile import ELEMENTS

SUBSETS = ("SP_ID", "MP_ID", "SP_OD", "MP_OD")


def _pick(a: float, b: float) -> str | None:
    return "Image A" if a > b else "Image B" if b > a else None


def _accuracy(rows: list[dict], decide) -> float:
    """Percent right, a tie or no decision counting half."""
    if not rows:
        return float("nan")
    total = 0.0
    for r in rows:
        p = decide(r)
        total += 0.5 if p is None else float(p == r["label"])
    return 100.0 * total / len(rows)


def _complete(r: dict) -> bool:
    return all(isinstance(r.get(k), list) and len(r[k]) == len(ELEMENTS) for k in ("scores_a", "scores_b", "true_scores_a", "true_scores_b"))


def _sum(r: dict, side: str, drop: int | None = None, true_at: int | None = None) -> int:
    own, true = r[f"scores_{side}"], r[f"true_scores_{side}"]
    return sum(true[i] if i == true_at else own[i] for i in range(len(ELEMENTS)) if i != drop)


def load(folder: str, subset: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, f"{subset}.rank*.jsonl"))):
        try:
            rows += read_records(path)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    return rows


def report(folder: str, subset: str, elements: list[str]) -> dict | None:
    rows = load(folder, subset)
    if not rows:
        return None
    if any("label" not in r for r in rows):
        raise SystemExit(f"{folder}/{subset}: rows without a 'label'; is this an eval.py predictions folder?")
    scored = [r for r in rows if _complete(r)]
    totals = [r for r in scored if isinstance(r.get("total_a"), int) and isinstance(r.get("total_b"), int)]
    unequal = [r for r in totals if r["total_a"] != r["total_b"]]
    out = {
        "subset": subset,
        "n": len(rows),
        "with_scores": len(scored),
        "answer": _accuracy(rows, lambda r: r.get("answer") if r.get("answer") in ("Image A", "Image B") else None),
        "totals_right": sum(r["total_a"] == sum(r["scores_a"]) and r["total_b"] == sum(r["scores_b"]) for r in totals),
        "follows_totals": sum(r.get("answer") == _pick(r["total_a"], r["total_b"]) for r in unequal),
        "unequal_totals": len(unequal),
        "own 5": _accuracy(scored, lambda r: _pick(_sum(r, "a"), _sum(r, "b"))),
    }
    for e in elements:
        i = ELEMENTS.index(e)
        out[f"own w/o {e}"] = _accuracy(scored, lambda r, i=i: _pick(_sum(r, "a", drop=i), _sum(r, "b", drop=i)))
        out[f"own + true {e}"] = _accuracy(scored, lambda r, i=i: _pick(_sum(r, "a", true_at=i), _sum(r, "b", true_at=i)))
        out[f"true w/o {e}"] = _accuracy(
            scored, lambda r, i=i: _pick(sum(r["true_scores_a"]) - r["true_scores_a"][i], sum(r["true_scores_b"]) - r["true_scores_b"][i])
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="predictions folders of eval.py runs (predictions/<system>)")
    ap.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    ap.add_argument("--elements", nargs="+", default=["Detail"], help=f"elements for the counterfactual columns, of {ELEMENTS}")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    bad = [e for e in args.elements if e not in ELEMENTS]
    if bad:
        ap.error(f"unknown element(s) {bad}; choose from {list(ELEMENTS)}")
    results = []
    for folder in args.folders:
        if not os.path.isdir(folder):
            ap.error(f"{folder}: not a folder")
        found = False
        for subset in args.subsets:
            row = report(folder, subset, args.elements)
            if row is None:
                continue
            found = True
            row["folder"] = folder
            results.append(row)
            extra = "  ".join(f"{k} {v:.1f}" for k, v in row.items() if k.startswith(("own ", "true ")))
            print(
                f"{folder}  {subset}: n={row['n']} answer {row['answer']:.1f}  totals right {row['totals_right']}/{row['with_scores']}"
                f"  follows totals {row['follows_totals']}/{row['unequal_totals']}  {extra}"
            )
        if not found:
            print(f"{folder}: no <SUBSET>.rank*.jsonl files for {args.subsets}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
