"""Compare two systems' saved eval predictions, paired on the same held-out pairs.

Each argument is a ``predictions/<system>/`` folder that ``scripts/eval.py`` wrote (``<SUBSET>.rank*.jsonl``), from
the same or different eval runs (the pairs are matched on subset + pair id, unswapped order, as the eval's own
comparisons are). Prints per-subset accuracy of both, and A - B on the four-split average with the paired,
user-clustered, subset-stratified bootstrap interval of ``evaluation.metrics.paired_average_diff``; ``--pred``
adds the profile-similarity (Pred) difference (loads the MiniLM sentence model).

    python research/paired_compare.py outputs/eval/new/predictions/model outputs/pipeline/vit/eval/predictions/extra_SFT

``--index 100:200`` keeps the samples whose index in their subset is in [100, 200): with an eval of all 200 users per
split, settings can be chosen on users 100-199 and reported on users 0-99 (the pipeline's table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load(folder: Path) -> dict[str, list[dict]]:
    """Records per subset from ``<SUBSET>.rank*.jsonl`` files (every rank's shard)."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder of eval predictions (predictions/<system>/)")
    out: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*.jsonl")):
        subset = f.name.split(".")[0]
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.setdefault(subset, []).append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{f}:{n}: not JSON ({e})") from None
    if not out:
        raise SystemExit(f"{folder}: no <SUBSET>.rank*.jsonl prediction files")
    return out


def index_range(text: str) -> tuple[int, int]:
    """``LO:HI`` -> (LO, HI), 0 <= LO < HI."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use LO:HI, e.g. 100:200") from None
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 <= LO < HI")
    return lo, hi


def keep_index(records: dict[str, list[dict]], lo: int, hi: int, folder: Path) -> dict[str, list[dict]]:
    """The records whose sample index is in [lo, hi); a subset left empty is an error naming the folder."""
    out = {s: [r for r in rows if lo <= int(r["index"]) < hi] for s, rows in records.items()}
    empty = sorted(s for s, rows in out.items() if not rows)
    if empty:
        raise SystemExit(f"{folder}: no samples with index in [{lo}, {hi}) in {empty} (was the eval run on fewer users?)")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="predictions folder of system A")
    ap.add_argument("b", type=Path, help="predictions folder of system B")
    ap.add_argument("--pred", action="store_true", help="also the Pred (profile similarity) difference")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--index", type=index_range, default=None, metavar="LO:HI",
                    help="only the samples whose index in their subset is in [LO, HI), e.g. 100:200")
    args = ap.parse_args(argv)

    from preferthinker.evaluation.metrics import paired_average_diff, paired_bootstrap_diff

    a, b = load(args.a), load(args.b)
    if args.index:
        a, b = keep_index(a, *args.index, args.a), keep_index(b, *args.index, args.b)
    shared = [s for s in a if s in b]
    if not shared:
        raise SystemExit(f"no subset in common: {sorted(a)} vs {sorted(b)}")
    print(f"| subset | n | A % | B % | A - B |\n|---|---:|---:|---:|---:|")
    for s in shared:
        d = paired_bootstrap_diff(a[s], b[s], n_boot=args.n_boot)
        print(f"| {s} | {d['n']} | {100 * d['acc_a']:.1f} | {100 * d['acc_b']:.1f} | {100 * d['diff']:+.1f} |")
    res = {"accuracy": paired_average_diff(a, b, "accuracy", n_boot=args.n_boot)}
    c = res["accuracy"]
    print(f"\naverage accuracy A - B: {100 * c['diff']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] "
          f"({c['n']} pairs, {c['n_users']} users)")
    if args.pred:
        from preferthinker.similarity import get_default_embedder

        res["pred"] = c = paired_average_diff(a, b, "pred", embedder=get_default_embedder(), n_boot=args.n_boot)
        print(f"average Pred A - B: {c['diff']:+.1f} [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]")
    return res


if __name__ == "__main__":
    main()
