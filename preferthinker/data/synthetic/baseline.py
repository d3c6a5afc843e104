"""The non-learned pixel-statistics baseline: the bar a learned model must beat on the synthetic bench.

Per image, each element is read from pixel statistics (``features.measure``):

* **Color**: the chroma-weighted circular mean hue, snapped to the nearest vocabulary hue;
* **Saturation**: the median HSV saturation, snapped to the nearest vocabulary level;
* **Artistic Medium** and **Detail**, read jointly: a Gaussian naive-Bayes rule over the medium
  statistics (tile grid, dot grid, light/dark/mid shares, thin lines, edge sharpness, mottling) and the
  texture statistics (robust fine-noise level, its spread, specks, crosshatch periodicity), with one
  prototype per (medium, detail) pair, since a texture blunts a medium's edges and a medium adds
  structure a texture measure sees;
* **Art Styles**: the same rule over the geometry statistics (outline ink, mirror symmetry, edge
  orientation, edge density, empty space, straightness, cornerness), with prototypes kept per medium.

The prototypes (per-term mean and spread of each statistic) come from *calibration renders*: random
profiles rendered with content seeds from a range that no split uses (``CALIBRATION_SEED_BASE``). No
bench or training record, and no label, is ever looked at.

Per record, the baseline reads the five liked and five disliked references, predicts the preference
profile (per element, every term at least two liked references agree on, else the most voted one) and
the non-preference profile (the most voted term among the disliked references), reads both candidates
and scores them with the data's own rule (preferred 5, non-preferred 1, other 3). A tie is broken by
the ``nearest`` rule: per element, the candidate whose statistics lie nearer the liked references and
farther from the disliked ones wins.

``method="nearest"`` uses only that rule (no terms at all): it is the simplest "nearer the liked,
farther from the disliked" baseline and is reported beside the main one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preferthinker.profile import ELEMENTS, split_terms
from preferthinker.data.synthetic.features import FEATURE_NAMES, measure
from preferthinker.data.synthetic.render import render_array, single_thread_blas
from preferthinker.data.synthetic.vocabulary import Vocabulary, load_vocabulary

CALIBRATION_SEED_BASE = 3 << 40  # content seeds of calibration renders; splits use < 2**33
JOINT = ("Artistic Medium", "Detail")  # read together, one prototype per pair of terms
METHODS = ("profile", "nearest")


@dataclass
class Calibration:
    size: int
    vocab: Vocabulary
    mean: dict[str, np.ndarray]  # "joint": (media, details, d); "Art Styles": (media, styles, d)
    var: dict[str, np.ndarray]  # same shapes (per-prototype variance, floored)
    scale: dict[str, np.ndarray]  # element -> (d,) spread of each statistic over all renders


def _profiles_for_calibration(vocab: Vocabulary, n: int, seed: int) -> list[dict[str, str]]:
    """Balanced random profiles: every term of every element appears equally often."""
    rng = np.random.default_rng([seed, 77])
    cols = {}
    for e in ELEMENTS:
        k = vocab.size(e)
        reps = np.tile(np.arange(k), n // k + 1)[:n]
        cols[e] = rng.permutation(reps)
    return [{e: vocab.names(e)[int(cols[e][i])] for e in ELEMENTS} for i in range(n)]


def calibrate(size: int, n: int = 2160, seed: int = 0, vocab: Vocabulary | None = None) -> Calibration:
    """Render ``n`` calibration images at ``size`` and fit the per-term prototypes."""
    vocab = vocab or load_vocabulary()
    limiter = single_thread_blas()
    profs = _profiles_for_calibration(vocab, n, seed)
    feats = {e: [] for e in ELEMENTS}
    for i, prof in enumerate(profs):
        m = measure(render_array(CALIBRATION_SEED_BASE + seed * 1_000_003 + i, prof, size, vocab=vocab))
        for e in ELEMENTS:
            feats[e].append([m[k] for k in FEATURE_NAMES[e]])
    if limiter is not None:
        limiter.restore_original_limits()
    X = {e: np.asarray(v, np.float64) for e, v in feats.items()}
    med = np.array([vocab.index("Artistic Medium", p["Artistic Medium"]) for p in profs])
    det = np.array([vocab.index("Detail", p["Detail"]) for p in profs])
    M, D = vocab.size("Artistic Medium"), vocab.size("Detail")
    mean, var, scale = {}, {}, {}
    for e in ELEMENTS:
        sc = X[e].std(0) + 1e-6
        scale[e] = sc
    # joint (medium, detail) prototypes
    xj = np.concatenate([X["Artistic Medium"], X["Detail"]], 1)
    floor = (0.05 * (xj.std(0) + 1e-6)) ** 2
    mu = np.zeros((M, D, xj.shape[1]))
    va = np.zeros_like(mu)
    for a in range(M):
        for d in range(D):
            sel = xj[(med == a) & (det == d)]
            if len(sel) < 3:
                raise ValueError(f"calibration too small: {len(sel)} renders for a medium/detail pair; raise n")
            mu[a, d], va[a, d] = sel.mean(0), sel.var(0) + floor
    mean["joint"], var["joint"] = mu, va
    # style prototypes per medium
    y = np.array([vocab.index("Art Styles", p["Art Styles"]) for p in profs])
    xs = X["Art Styles"]
    floor = (0.05 * (xs.std(0) + 1e-6)) ** 2
    K = vocab.size("Art Styles")
    mu = np.zeros((M, K, xs.shape[1]))
    va = np.zeros_like(mu)
    for a in range(M):
        for k in range(K):
            sel = xs[(med == a) & (y == k)]
            if len(sel) < 3:
                raise ValueError(f"calibration too small: {len(sel)} renders for a medium/style pair; raise n")
            mu[a, k], va[a, k] = sel.mean(0), sel.var(0) + floor
    mean["Art Styles"], var["Art Styles"] = mu, va
    return Calibration(size=size, vocab=vocab, mean=mean, var=var, scale=scale)


_CACHE: dict[int, Calibration] = {}


def get_calibration(size: int) -> Calibration:
    if size not in _CACHE:
        _CACHE[size] = calibrate(size)
    return _CACHE[size]


def _loglik(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (((x - mu) ** 2) / var + np.log(var)).sum(-1)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    mx = x.max(axis=axis, keepdims=True)
    return (mx + np.log(np.exp(x - mx).sum(axis=axis, keepdims=True))).squeeze(axis)


def classify(m: Mapping[str, float], cal: Calibration) -> dict[str, np.ndarray]:
    """Per element, a log-score for every term of the vocabulary (higher = more likely)."""
    vocab = cal.vocab
    out: dict[str, np.ndarray] = {}
    hues = np.array([float(t["hue"]) for t in vocab.terms["Color"]])
    dh = np.abs((m["hue"] - hues + 180.0) % 360.0 - 180.0)
    out["Color"] = -dh
    sats = np.array([float(t["saturation"]) for t in vocab.terms["Saturation"]])
    out["Saturation"] = -np.abs(m["saturation"] - sats)
    xj = np.array([m[k] for k in FEATURE_NAMES["Artistic Medium"] + FEATURE_NAMES["Detail"]])
    joint = _loglik(xj, cal.mean["joint"], cal.var["joint"])  # (M, D)
    out["Artistic Medium"] = _logsumexp(joint, 1)
    out["Detail"] = _logsumexp(joint, 0)
    medium = int(np.argmax(out["Artistic Medium"]))
    xs = np.array([m[k] for k in FEATURE_NAMES["Art Styles"]])
    out["Art Styles"] = _loglik(xs, cal.mean["Art Styles"][medium], cal.var["Art Styles"][medium])
    return {e: out[e] for e in ELEMENTS}


def predict_terms(img, cal: Calibration) -> dict[str, str]:
    """The baseline's reading of one image: one term per element."""
    scores = classify(measure(img), cal)
    return {e: cal.vocab.names(e)[int(np.argmax(s))] for e, s in scores.items()}


# ------------------------------------------------------------------------------------------------
# records


def _load(root: Path, rel: str) -> np.ndarray:
    with Image.open(root / rel) as im:
        return np.asarray(im.convert("RGB"))


def _get(record: Any, attr: str, key: str):
    if isinstance(record, Mapping):
        return record.get(key, record.get(attr))
    return getattr(record, attr)


def _vote_profile(readings: Sequence[Mapping[str, str]], multi: bool, exclude: Mapping[str, list[str]] | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in ELEMENTS:
        votes = Counter(r[e] for r in readings)
        ranked = [t for t, _ in votes.most_common() if not exclude or t not in exclude[e]]
        if not ranked:
            ranked = [t for t, _ in votes.most_common()]
        if multi:
            chosen = [t for t in ranked if votes[t] >= 2] or ranked[:1]
            out[e] = chosen[:2]
        else:
            out[e] = ranked[:1]
    return out


def _nearest_scores(cand: Mapping[str, np.ndarray], liked: Sequence[Mapping[str, np.ndarray]], disliked: Sequence[Mapping[str, np.ndarray]], cal: Calibration) -> float:
    total = 0.0
    for e in ELEMENTS:
        sc = cal.scale[e]
        dl = min(float(np.sqrt((((cand[e] - r[e]) / sc) ** 2).sum())) for r in liked)
        dd = min(float(np.sqrt((((cand[e] - r[e]) / sc) ** 2).sum())) for r in disliked)
        total += float(np.tanh(dd - dl))
    return total


def _vectors(m: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {e: np.array([m[k] for k in FEATURE_NAMES[e]], np.float64) for e in ELEMENTS}


def baseline_predict(record: Any, image_root: str | os.PathLike, *, method: str = "profile", max_refs: int = 5) -> dict[str, Any]:
    """Predict one record (a ``PreferenceRecord`` or an official-schema dict) from its pixels.

    Returns ``{"answer": "Image A"|"Image B", "preference": {element: term(s)}, "non_preference":
    {element: term}, "scores_a": [5 ints], "scores_b": [5 ints], "candidates": {"A": terms, "B": terms}}``.
    Multi-term preferences are joined with ", " like the data's ``prefer_attributes``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    root = Path(image_root)
    liked_paths = list(_get(record, "preferred", "prefered_images"))[:max_refs]
    disliked_paths = list(_get(record, "non_preferred", "non_prefered_images"))[:max_refs]
    a_path, b_path = _get(record, "image_a", "imageA"), _get(record, "image_b", "imageB")
    imgs = [_load(root, p) for p in liked_paths + disliked_paths + [a_path, b_path]]
    cal = get_calibration(imgs[0].shape[0])
    ms = [measure(im) for im in imgs]
    nl = len(liked_paths)
    nd = len(disliked_paths)
    vecs = [_vectors(m) for m in ms]
    reads = [{e: cal.vocab.names(e)[int(np.argmax(s))] for e, s in classify(m, cal).items()} for m in ms]
    liked_r, disliked_r, cand_r = reads[:nl], reads[nl : nl + nd], reads[nl + nd :]
    pref = _vote_profile(liked_r, multi=True)
    nonpref = _vote_profile(disliked_r, multi=False, exclude=pref)
    near = [_nearest_scores(vecs[nl + nd + i], vecs[:nl], vecs[nl : nl + nd], cal) for i in range(2)]
    scores = []
    for cr in cand_r:
        scores.append([5 if cr[e] in pref[e] else 1 if cr[e] == nonpref[e][0] else 3 for e in ELEMENTS])
    ta, tb = sum(scores[0]), sum(scores[1])
    if method == "nearest" or ta == tb:
        answer = "Image A" if near[0] >= near[1] else "Image B"
    else:
        answer = "Image A" if ta > tb else "Image B"
    return {
        "answer": answer,
        "preference": {e: ", ".join(pref[e]) for e in ELEMENTS},
        "non_preference": {e: nonpref[e][0] for e in ELEMENTS},
        "scores_a": scores[0],
        "scores_b": scores[1],
        "candidates": {"A": cand_r[0], "B": cand_r[1]},
    }


def _terms(value: str | None) -> set[str]:
    return {t.lower() for t in split_terms(value)} if value else set()


def evaluate_records(records: Sequence[Any], image_root: str | os.PathLike, *, method: str = "profile", progress: bool = False) -> dict[str, Any]:
    """Accuracy of the baseline on records with labels, plus per-element accuracies:

    * ``preference_element_acc``: predicted preference terms == the true ones (as sets), per element;
    * ``non_preference_element_acc``: the same for the non-preference profile;
    * ``candidate_element_acc``: the term read from a candidate == its true term (needs the
      ``true_profile_a/b`` extra keys the synthetic engine writes), per element; chance = 1/#terms.
    """
    from tqdm.auto import tqdm

    n = correct = 0
    pref_hits = Counter()
    non_hits = Counter()
    cand_hits = Counter()
    cand_n = 0
    it = tqdm(records, desc="baseline", disable=not progress)
    limiter = single_thread_blas()
    for rec in it:
        out = baseline_predict(rec, image_root, method=method)
        label = _get(rec, "label", "label")
        if label is None and isinstance(rec, Mapping):
            label = rec["conversations"][0]["value"]
        n += 1
        correct += int(out["answer"] == label)
        truth_p = _get(rec, "prefer_attributes", "prefer_attributes")
        truth_n = _get(rec, "non_prefer_attributes", "non_prefer_attributes")
        for e in ELEMENTS:
            if truth_p:
                pref_hits[e] += int(_terms(out["preference"][e]) == _terms(truth_p.get(e)))
            if truth_n:
                non_hits[e] += int(_terms(out["non_preference"][e]) == _terms(truth_n.get(e)))
        extra = _get(rec, "extra", "extra") if not isinstance(rec, Mapping) else rec
        if extra and "true_profile_a" in extra:
            cand_n += 2
            for side, key in (("A", "true_profile_a"), ("B", "true_profile_b")):
                for e in ELEMENTS:
                    cand_hits[e] += int(out["candidates"][side][e].lower() == str(extra[key][e]).lower())
    if limiter is not None:
        limiter.restore_original_limits()
    res: dict[str, Any] = {"n": n, "accuracy": correct / max(n, 1), "method": method}
    res["preference_element_acc"] = {e: pref_hits[e] / max(n, 1) for e in ELEMENTS}
    res["non_preference_element_acc"] = {e: non_hits[e] / max(n, 1) for e in ELEMENTS}
    if cand_n:
        res["candidate_element_acc"] = {e: cand_hits[e] / cand_n for e in ELEMENTS}
    return res


def evaluate_bench(root: str | os.PathLike, subsets: Sequence[str] | None = None, *, methods: Sequence[str] = ("profile", "nearest"), progress: bool = True) -> dict[str, Any]:
    """Run the baseline on every bench subset under ``root`` (official layout) through the official loader."""
    from preferthinker.data.schema import default_image_root, load_bench, subset_paths

    out: dict[str, Any] = {}
    for name, path in subset_paths(root, subsets).items():
        recs = load_bench(path)
        out[name] = {m: evaluate_records(recs, default_image_root(path), method=m, progress=progress) for m in methods}
    return out


def chance_levels(vocab: Vocabulary | None = None) -> dict[str, float]:
    vocab = vocab or load_vocabulary()
    return {e: 1.0 / vocab.size(e) for e in ELEMENTS}


def format_table(results: Mapping[str, Any]) -> str:
    """A markdown table of evaluate_bench results."""
    lines = ["| split | method | accuracy | " + " | ".join(f"cand. {e}" for e in ELEMENTS) + " | " + " | ".join(f"pref. {e}" for e in ELEMENTS) + " |"]
    lines.append("|" + "---|" * (3 + 2 * len(ELEMENTS)))
    for split, by_method in results.items():
        for method, r in by_method.items():
            cand = r.get("candidate_element_acc", {})
            lines.append(
                f"| {split} | {method} | {r['accuracy']:.3f} | "
                + " | ".join(f"{cand.get(e, float('nan')):.3f}" for e in ELEMENTS)
                + " | "
                + " | ".join(f"{r['preference_element_acc'][e]:.3f}" for e in ELEMENTS)
                + " |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Pixel-statistics baseline accuracy on a synthetic (or any official-layout) bench.")
    ap.add_argument("root", nargs="?", default="data/synthetic", help="bench root holding data/<SUBSET>/<SUBSET>.json")
    ap.add_argument("--subsets", nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    res = evaluate_bench(args.root, args.subsets, methods=args.methods)
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0
