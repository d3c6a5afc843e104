"""Which step of a compact CoT response costs the answers: the predicted profile, or the candidates as read?

For every response (both orders) of saved eval predictions on the synthetic bench, the answer is recomputed from
the response's per-element notes (``A shows T; liked P1 no, P2 yes; disliked N no.``) with the scoring rule (5 for
a liked term, 1 for the disliked one, 3 otherwise), four ways:

* ``notes``: the terms the notes read and the liked / disliked terms they check against (what the response's
  scores follow; close to ``model``, the answer it wrote);
* ``true profile``: the terms the notes read, scored against the user's true profile;
* ``true reading``: the candidates' true terms, scored against the liked / disliked terms of the notes;
* ``both``: true terms and true profile (100 % by construction: a check of the bookkeeping).

Equal recomputed totals count as half right (a coin flip); the model's own answer on such a tie is not a reading.

It also counts how many liked terms per element the predicted profile names against the truth (one for a
single-preference user, two for a multi-preference one): the one-or-two decision across the five liked images.

    python research/profile_counterfactual.py outputs/eval/<run>/predictions/model --data-root data/synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from research.section_errors import NOTE, _items, sections  # noqa: E402

WAYS = ("model", "notes", "true profile", "true reading", "both")


def _terms(text: object) -> frozenset[str]:
    from preferthinker.profile import split_terms

    return frozenset(split_terms(str(text or "")))


def _answer(read_a: dict, read_b: dict, liked: dict, disliked: dict, elements: tuple[str, ...]) -> str | None:
    def score(term: str, e: str) -> int:
        return 5 if term in liked[e] else (1 if term in disliked[e] else 3)

    sa, sb = (sum(score(r[e], e) for e in elements) for r in (read_a, read_b))
    return None if sa == sb else ("Image A" if sa > sb else "Image B")


def analyse(records: list[dict], bench: list[dict]) -> dict:
    """Accuracy (%) of the four recomputed answers and the model's own, and the liked-term-count confusion."""
    from preferthinker.profile import ELEMENTS

    right: Counter = Counter()
    counts: Counter = Counter()
    n = 0
    for r in records:
        idx = int(r["index"])
        if not 0 <= idx < len(bench):
            raise SystemExit(f"prediction index {idx} is not in the bench file ({len(bench)} records): wrong --data-root?")
        b = bench[idx]
        if "true_profile_a" not in b:
            raise SystemExit("the bench records have no true_profile_a/b: this probe needs the synthetic bench")
        n += 1
        right["model"] += r.get("answer") == r["label"]
        if not r.get("swapped"):
            pred = r.get("pred_preference") or {}
            counts[(len(_terms(r["true_preference"][ELEMENTS[0]])), len(_terms(pred.get(ELEMENTS[0]))))] += 1
        true_a, true_b = (b["true_profile_b"], b["true_profile_a"]) if r.get("swapped") else (b["true_profile_a"], b["true_profile_b"])
        read: dict[str, dict[str, str]] = {"A": {}, "B": {}}
        noted: tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]] = ({}, {})
        for e, sec in zip(ELEMENTS, sections(r.get("raw") or "")):
            for m in NOTE.finditer(sec):
                read[m["side"]][e] = m["term"].strip()
                if m["side"] == "A":  # both notes of a section check against the same terms (copy errors aside)
                    noted[0][e] = frozenset(t for t, _ in _items(m["liked"]))
                    noted[1][e] = frozenset(t for t, _ in _items(m["dis"]))
        if any(len(read[s]) != len(ELEMENTS) for s in "AB") or len(noted[0]) != len(ELEMENTS):
            continue  # notes that do not read: every recomputed answer counts as wrong
        true = ({e: _terms(r["true_preference"][e]) for e in ELEMENTS}, {e: _terms(r["true_non_preference"][e]) for e in ELEMENTS})
        for way, (ra, rb, prof) in {"notes": (read["A"], read["B"], noted), "true profile": (read["A"], read["B"], true),
                                    "true reading": (true_a, true_b, noted), "both": (true_a, true_b, true)}.items():
            got = _answer(ra, rb, *prof, ELEMENTS)
            right[way] += 0.5 if got is None else float(got == r["label"])
    return {"n": n, "accuracy": {w: 100.0 * right[w] / max(n, 1) for w in WAYS},
            "liked_terms": {f"true {t} -> written {p}": c for (t, p), c in sorted(counts.items())}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, help="a predictions/<system>/ folder written by scripts/eval.py")
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"), help="the synthetic data root (data/<SUBSET>/<SUBSET>.json)")
    args = ap.parse_args(argv)
    files = sorted(args.predictions.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.predictions}: no <SUBSET>.rank*.jsonl prediction files")
    by_subset: dict[str, list[dict]] = {}
    for f in files:
        by_subset.setdefault(f.name.split(".")[0], []).extend(json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip())
    out = {}
    print(f"| subset | n | {' | '.join(WAYS)} | liked terms per element (first element; unswapped) |")
    print(f"|---|---:|{'---:|' * len(WAYS)}---|")
    for subset, recs in sorted(by_subset.items()):
        path = args.data_root / "data" / subset / f"{subset}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no bench file for subset {subset} (is --data-root the synthetic data root?)")
        res = out[subset] = analyse(recs, json.loads(path.read_text(encoding="utf-8")))
        acc = " | ".join(f"{res['accuracy'][w]:.1f}" for w in WAYS)
        print(f"| {subset} | {res['n']} | {acc} | {', '.join(f'{k}: {v}' for k, v in res['liked_terms'].items())} |")
    return out


if __name__ == "__main__":
    main()
