"""Per-user real-user benchmark from a LOCAL Pick-a-Pic export (v1/v2, with or without image bytes).

Input: one parquet / JSON (a list of rows) / JSONL file, or a folder of them searched recursively (the HF
shards; one split at a time, ``--split``), with
the real Pick-a-Pic columns ``ranking_id, user_id, caption, created_at, image_0_uid, image_1_uid,
model_0, model_1, label_0, has_label, are_different`` (required) and ``label_1, best_image_uid,
num_example_per_prompt, jpg_0, jpg_1`` (optional). ``*_no_images`` exports lack ``jpg_0/jpg_1``;
then ``images_dir`` must hold ``<uid>.jpg`` (or .jpeg/.png/.webp) for the selected images.

Recipe (../shared/reference/peers-and-evaluation.md, section 2):

1. keep ``has_label`` and ``are_different`` rows; drop ties (``label_0 == 0.5``, counted for the tie
   rate), rows whose labels contradict ``best_image_uid``, duplicate ``ranking_id`` s, pairs of one
   image with itself and repeated image pairs (the earliest copy is kept);
2. per user, sort by ``created_at``; the earliest ``n_refs`` pairs are the references (winner ->
   liked, loser -> disliked);
3. later pairs are test candidates when their prompt differs from every reference prompt and
   neither image is a reference image (optionally only pairs after ``test_after``, e.g. the last
   ``created_at`` of Pick-a-Pic v1 to avoid PickScore leakage); heavy users are capped at
   ``max_test`` test pairs (a seeded random subset); users with fewer than ``min_pairs`` clean pairs
   or ``min_test`` test pairs are dropped;
4. images of the selection are streamed from the export and written to disk as they come (decoded with
   PIL first); a corrupt/missing image or a pair whose two images are byte-identical removes that pair
   and the selection is redone (``max_users`` caps the users, a seeded choice stable across rounds);
5. A/B order: exactly half the test pairs (±1) show the winner as "Image A", assigned by a seeded
   shuffle.

Output (official layout): ``<out_root>/data/PICKAPIC/PICKAPIC.json`` (a JSON list; image paths are
relative to ``<out_root>/data/PICKAPIC/images/``, where the original image bytes are written as
``<uid>.<ext>``), ``stats.json`` and ``split_ids.jsonl`` (ids and roles, to publish a split without
images).

Memory stays bounded whatever the export size (``pickapic_io``): metadata rows stream one batch at a time and
only their few used fields are kept, image bytes are never held beyond one batch. Measured in
``docs/benchmarks.md`` (``benchmarks/pickapic_memory.py``).

CLI: ``python -m preferthinker.data.pickapic --input X --out Y [--split train] [--max-users N] [--refs 5]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from preferthinker.data.pickapic_io import (
    IMAGE_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ImageWriter,
    input_files,
    iter_rows,
    load_rows,
    stream_images,
)

__all__ = [
    "IMAGE_COLUMNS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "PickapicConfig",
    "build_pickapic_benchmark",
    "clean_rows",
    "generator_oracle_accuracy",
    "load_rows",
    "main",
    "select_pairs",
]

SUBSET = "PICKAPIC"
_MAX_ROUNDS = 200


@dataclass
class PickapicConfig:
    n_refs: int = 5            # earliest pairs per user used as references (K)
    min_pairs: int = 10        # clean, tie-free pairs a user needs to be considered
    min_test: int = 1          # test pairs a user needs after the reference/test disjointness filters
    max_test: int = 20         # cap on test pairs per user (heavy users), seeded random subset
    seed: int = 0
    test_after: str | None = None  # ISO time: only pairs created strictly later may be test pairs
    max_users: int | None = None   # cap on benchmark users: a seeded choice among the eligible ones

    def validate(self) -> None:
        if self.n_refs < 1:
            raise ValueError(f"n_refs must be >= 1, got {self.n_refs}")
        if self.min_test < 1:
            raise ValueError(f"min_test must be >= 1, got {self.min_test}")
        if self.max_test < self.min_test:
            raise ValueError(f"max_test ({self.max_test}) must be >= min_test ({self.min_test})")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1 or None, got {self.max_users}")
        if self.min_pairs < self.n_refs + self.min_test:
            raise ValueError(f"min_pairs ({self.min_pairs}) must be >= n_refs + min_test "
                             f"({self.n_refs + self.min_test})")


# --------------------------------------------------------------------------------------- cleaning
def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y")
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _timestamp(value: Any, file: str) -> float:
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                return float(text)
            except ValueError:
                pass
        else:
            return _timestamp(dt, file)
    raise ValueError(f"{file}: column 'created_at' holds an unreadable time {value!r}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _norm_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def _uid(value: Any) -> str:
    return str(value).strip()


def _id_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def clean_rows(rows: Iterable[Mapping]) -> tuple[list[dict], dict[str, int]]:
    """Apply the row filters to a stream of rows; returns (clean rows sorted by time, counts of what was dropped).

    A clean row keeps only what the selection and the records use: ``ranking_id``, ``caption``, ``ts``
    (seconds), ``user``, ``rid``, ``winner``/``loser`` (image uids), ``winner_model``/``loser_model`` (user
    and model names interned: a full export repeats a few thousand users and a dozen models over ~1M rows).
    Duplicate ``ranking_id`` s are dropped across all input files.
    """
    counts = Counter({k: 0 for k in (
        "rows_read", "dropped_no_label", "dropped_not_different", "ties", "dropped_invalid_label",
        "dropped_inconsistent_best_uid", "dropped_duplicate_ranking_id", "dropped_same_image",
        "dropped_duplicate_image_pair",
    )})
    stage: list[dict] = []
    for r in rows:
        counts["rows_read"] += 1
        if not _as_bool(r.get("has_label")):
            counts["dropped_no_label"] += 1
            continue
        if not _as_bool(r.get("are_different")):
            counts["dropped_not_different"] += 1
            continue
        try:
            l0 = float(r.get("label_0"))
        except (TypeError, ValueError):
            l0 = float("nan")
        if l0 == 0.5:
            counts["ties"] += 1
            continue
        if l0 not in (0.0, 1.0):
            counts["dropped_invalid_label"] += 1
            continue
        u0, u1 = _uid(r["image_0_uid"]), _uid(r["image_1_uid"])
        winner, loser = (u0, u1) if l0 == 1.0 else (u1, u0)
        l1 = r.get("label_1")
        best = r.get("best_image_uid")
        inconsistent = False
        if l1 is not None:
            try:
                inconsistent = abs(float(l1) + l0 - 1.0) > 1e-6
            except (TypeError, ValueError):
                inconsistent = True
        if best not in (None, "") and _uid(best) != winner:
            inconsistent = True
        if inconsistent:
            counts["dropped_inconsistent_best_uid"] += 1
            continue
        win_model, lose_model = (r["model_0"], r["model_1"]) if l0 == 1.0 else (r["model_1"], r["model_0"])
        rid = r.get("ranking_id")
        stage.append({
            "ranking_id": rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None,
            "caption": str(r["caption"] or ""),
            "ts": _timestamp(r["created_at"], r.get("_file", "<input>")),
            "user": sys.intern(_id_str(r["user_id"])),
            "rid": _id_str(r["ranking_id"]),
            "winner": winner, "loser": loser,
            "winner_model": sys.intern(str(win_model)), "loser_model": sys.intern(str(lose_model)),
        })
    stage.sort(key=lambda x: (x["ts"], x["rid"]))
    seen_ids: set[str] = set()
    seen_pairs: set[frozenset] = set()
    clean: list[dict] = []
    for r in stage:
        if r["rid"] in seen_ids:
            counts["dropped_duplicate_ranking_id"] += 1
            continue
        seen_ids.add(r["rid"])
        if r["winner"] == r["loser"]:
            counts["dropped_same_image"] += 1
            continue
        pair = frozenset((r["winner"], r["loser"]))
        if pair in seen_pairs:
            counts["dropped_duplicate_image_pair"] += 1
            continue
        seen_pairs.add(pair)
        clean.append(r)
    counts["clean_pairs"] = len(clean)
    return clean, dict(counts)


# --------------------------------------------------------------------------------------- selection
@dataclass
class UserSelection:
    user: str
    refs: list[dict]
    tests: list[dict]


@dataclass
class Selection:
    users: list[UserSelection] = field(default_factory=list)
    users_considered: int = 0
    users_too_few_pairs: int = 0
    users_too_few_test: int = 0
    users_over_cap: int = 0


def _user_rng(seed: int, user: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(user.encode("utf-8"))])


def select_pairs(clean: Sequence[Mapping], cfg: PickapicConfig) -> Selection:
    """Per-user chronological reference/test split of clean rows (see the module docstring)."""
    cfg.validate()
    after = _timestamp(cfg.test_after, "<test_after>") if cfg.test_after is not None else None
    by_user: dict[str, list[Mapping]] = {}
    for r in clean:
        by_user.setdefault(r["user"], []).append(r)
    sel = Selection(users_considered=len(by_user))
    for user in sorted(by_user):
        rows = sorted(by_user[user], key=lambda x: (x["ts"], x["rid"]))
        if len(rows) < cfg.min_pairs:
            sel.users_too_few_pairs += 1
            continue
        refs = rows[: cfg.n_refs]
        ref_prompts = {_norm_prompt(r["caption"]) for r in refs}
        ref_images = {u for r in refs for u in (r["winner"], r["loser"])}
        cands = [
            r for r in rows[cfg.n_refs:]
            if _norm_prompt(r["caption"]) not in ref_prompts
            and r["winner"] not in ref_images and r["loser"] not in ref_images
            and (after is None or r["ts"] > after)
        ]
        if len(cands) < cfg.min_test:
            sel.users_too_few_test += 1
            continue
        if len(cands) > cfg.max_test:
            keep = np.sort(_user_rng(cfg.seed, user).choice(len(cands), size=cfg.max_test, replace=False))
            cands = [cands[i] for i in keep]
        sel.users.append(UserSelection(user=user, refs=list(refs), tests=list(cands)))
    if cfg.max_users is not None and len(sel.users) > cfg.max_users:
        # a per-user seeded priority, not a draw over the current list: a user dropped for bad images in one
        # round does not reshuffle which users the cap keeps in the next
        keep = sorted(sel.users, key=lambda u: (zlib.crc32(f"{cfg.seed}:{u.user}".encode()), u.user))[: cfg.max_users]
        kept = {u.user for u in keep}
        sel.users_over_cap = len(sel.users) - len(keep)
        sel.users = [u for u in sel.users if u.user in kept]
    return sel


# --------------------------------------------------------------------------------------- oracle
def _record_label(r: Mapping, i: int) -> str:
    label = r.get("label")
    if label is None:
        conv = r.get("conversations") or []
        label = conv[0].get("value") if conv and isinstance(conv[0], Mapping) else None
    if label not in ("Image A", "Image B"):
        raise ValueError(f"record #{i} has no 'Image A'/'Image B' label (conversations[0].value)")
    return label


def generator_oracle_accuracy(records: Sequence[Mapping]) -> dict:
    """Generator-identity baseline: predict the candidate whose generator (``model_A``/``model_B``)
    appears more often among the user's liked references (``prefered_models``).

    Undecided pairs (equal votes, e.g. same-generator pairs) score 0.5 (a coin flip) in ``accuracy``;
    ``accuracy_decided`` and ``coverage`` describe the decided part. Also reported on the
    different-generator pairs alone.
    """
    if not records:
        raise ValueError("generator_oracle_accuracy: no records")
    correct = decided = 0
    diff_n = diff_score = 0.0
    for i, r in enumerate(records):
        for key in ("prefered_models", "model_A", "model_B"):
            if key not in r:
                raise ValueError(f"record #{i} lacks {key!r} (build the benchmark with preferthinker.data.pickapic)")
        votes = Counter(str(m) for m in r["prefered_models"])
        va, vb = votes[str(r["model_A"])], votes[str(r["model_B"])]
        label = _record_label(r, i)
        if va == vb:
            score = 0.5
        else:
            decided += 1
            hit = ("Image A" if va > vb else "Image B") == label
            correct += hit
            score = float(hit)
        if str(r["model_A"]) != str(r["model_B"]):
            diff_n += 1
            diff_score += score
    n = len(records)
    undecided = n - decided
    return {
        "n": n,
        "accuracy": (correct + 0.5 * undecided) / n,
        "n_decided": decided,
        "coverage": decided / n,
        "accuracy_decided": (correct / decided) if decided else None,
        "n_different_generator": int(diff_n),
        "accuracy_different_generator": (diff_score / diff_n) if diff_n else None,
    }


# --------------------------------------------------------------------------------------- build
def _orig_id(r: Mapping) -> int | str:
    """The ranking id as the export wrote it (int in the HF files), else its string form."""
    rid = r.get("ranking_id")
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else r["rid"]


def _records_from_selection(sel: Selection, ext: Mapping[str, str], seed: int) -> list[dict]:
    tests = [(u, t) for u in sel.users for t in u.tests]
    n = len(tests)
    flags = np.array([True] * (n // 2) + [False] * (n - n // 2))
    np.random.default_rng(seed).shuffle(flags)
    out: list[dict] = []
    for (u, t), winner_first in zip(tests, flags):
        if winner_first:
            a, b, ma, mb, label = t["winner"], t["loser"], t["winner_model"], t["loser_model"], "Image A"
        else:
            a, b, ma, mb, label = t["loser"], t["winner"], t["loser_model"], t["winner_model"], "Image B"
        out.append({
            "imageA": a + ext[a],
            "imageB": b + ext[b],
            "prefered_images": [r["winner"] + ext[r["winner"]] for r in u.refs],
            "non_prefered_images": [r["loser"] + ext[r["loser"]] for r in u.refs],
            "conversations": [{"from": "gpt", "value": label}],
            "user_id": u.user,
            "prompt": str(t["caption"]),
            "ranking_id": _orig_id(t),
            "model_A": str(ma),
            "model_B": str(mb),
            "reference_prompt_list": [str(r["caption"]) for r in u.refs],
            "prefered_models": [r["winner_model"] for r in u.refs],
            "non_prefered_models": [r["loser_model"] for r in u.refs],
            "reference_ranking_ids": [_orig_id(r) for r in u.refs],
            "image_A_uid": a,
            "image_B_uid": b,
            "created_at": _iso(t["ts"]),
            "same_generator": str(ma) == str(mb),
            "pair_id": f"pickapic-{t['rid']}",
        })
    return out


def _split_rows(sel: Selection) -> Iterable[dict]:
    for u in sel.users:
        for role, rows in (("ref", u.refs), ("test", u.tests)):
            for r in rows:
                yield {"user_id": u.user, "ranking_id": _orig_id(r), "role": role,
                       "winner_uid": r["winner"], "loser_uid": r["loser"], "created_at": _iso(r["ts"])}


def build_pickapic_benchmark(
    input_path: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    n_refs: int = 5,
    images_dir: str | os.PathLike | None = None,
    min_pairs: int = 10,
    min_test: int = 1,
    max_test: int = 20,
    seed: int = 0,
    test_after: str | None = None,
    split: str | None = None,
    max_users: int | None = None,
) -> dict:
    """Build ``<out_root>/data/PICKAPIC/`` from a local Pick-a-Pic export; returns the stats dict.
    Streams the export (bounded memory); images go to disk as they are found."""
    cfg = PickapicConfig(n_refs=n_refs, min_pairs=min_pairs, min_test=min_test, max_test=max_test,
                         seed=seed, test_after=test_after, max_users=max_users)
    cfg.validate()
    img_dir = Path(images_dir) if images_dir is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise ValueError(f"{img_dir}: images_dir is not a folder")
    files = input_files(input_path, split)
    has_bytes: dict[str, bool] = {}
    clean, counts = clean_rows(iter_rows(files, has_bytes))
    lacking = [f for f, ok in has_bytes.items() if not ok]
    if lacking and img_dir is None:
        raise ValueError(f"{lacking[0]}: missing image columns {list(IMAGE_COLUMNS)} (a *_no_images export); "
                         "pass images_dir holding <image uid>.jpg/.png")
    n_decisive_pool = counts["rows_read"] - counts["dropped_no_label"] - counts["dropped_not_different"]

    out_dir = Path(out_root) / "data" / SUBSET
    image_out = out_dir / "images"
    writer = ImageWriter(image_out)
    byte_files = [f for f in files if has_bytes.get(str(f))]
    bad_pairs: set[str] = set()
    identical_pairs = 0
    sel = Selection()
    for rounds in range(1, _MAX_ROUNDS + 1):
        bad_uids = {u for u, v in writer.found.items() if v is None}
        pool = [r for r in clean if r["rid"] not in bad_pairs and r["winner"] not in bad_uids and r["loser"] not in bad_uids]
        sel = select_pairs(pool, cfg)
        if not sel.users:
            raise ValueError(
                f"{input_path}: no user survived the filters ({counts['clean_pairs']} clean pairs over "
                f"{sel.users_considered} users; {sel.users_too_few_pairs} users had < {cfg.min_pairs} pairs, "
                f"{sel.users_too_few_test} had < {cfg.min_test} usable test pairs; "
                f"{len(bad_uids)} images unreadable)"
            )
        chosen = [r for u in sel.users for r in (*u.refs, *u.tests)]
        wanted = {x for r in chosen for x in (r["winner"], r["loser"])} - set(writer.found)
        if wanted:  # one streaming pass over the export per round (usually one or two rounds)
            stream_images(byte_files, wanted, writer, img_dir)
        new_bad = set()
        for r in chosen:
            iw, il = writer.found.get(r["winner"]), writer.found.get(r["loser"])
            if iw is None or il is None:
                new_bad.add(r["rid"])
            elif iw[1] == il[1]:  # same digest: byte-identical images under two uids
                new_bad.add(r["rid"])
                identical_pairs += 1
        if not new_bad:
            break
        bad_pairs |= new_bad
    else:  # pragma: no cover - each round removes at least one pair, so this needs a pathological input
        raise RuntimeError(f"{input_path}: selection did not settle after {_MAX_ROUNDS} rounds")

    used = {x for u in sel.users for r in (*u.refs, *u.tests) for x in (r["winner"], r["loser"])}
    ext = {uid: writer.found[uid][0] for uid in used}  # type: ignore[index]
    for path in writer.written - {image_out / f"{uid}{ext[uid]}" for uid in used}:
        path.unlink(missing_ok=True)  # written in an earlier round for a pair a later round dropped
    records = _records_from_selection(sel, ext, cfg.seed)

    json_path = out_dir / f"{SUBSET}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, json_path)
    with open(out_dir / "split_ids.jsonl", "w", encoding="utf-8") as fh:
        for row in _split_rows(sel):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    per_user = [len(u.tests) for u in sel.users]
    n_pairs = len(records)
    stats = {
        "input": [str(f) for f in files],
        "split": split,
        "config": asdict(cfg),
        "users": len(sel.users),
        "pairs": n_pairs,
        "reference_pairs": sum(len(u.refs) for u in sel.users),
        "pairs_per_user": {"min": int(min(per_user)), "median": float(np.median(per_user)),
                           "mean": float(np.mean(per_user)), "max": int(max(per_user))},
        "filters": counts,
        "tie_rate": (counts["ties"] / n_decisive_pool) if n_decisive_pool else None,
        "users_considered": sel.users_considered,
        "users_dropped_too_few_pairs": sel.users_too_few_pairs,
        "users_dropped_too_few_test": sel.users_too_few_test,
        "users_dropped_over_cap": sel.users_over_cap,
        "pairs_dropped_bad_image": len(bad_pairs) - identical_pairs,
        "pairs_dropped_identical_bytes": identical_pairs,
        "images_unreadable": sum(1 for v in writer.found.values() if v is None),
        "selection_rounds": rounds,
        "images_written": len(used),
        "label_a_share": sum(r["conversations"][0]["value"] == "Image A" for r in records) / n_pairs,
        "same_generator_share": sum(r["same_generator"] for r in records) / n_pairs,
        "generator_oracle": generator_oracle_accuracy(records),
        "benchmark_json": str(json_path),
        "images_dir": str(image_out),
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


# --------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m preferthinker.data.pickapic",
        description="Build the per-user PICKAPIC benchmark (official layout) from a local Pick-a-Pic export.",
    )
    ap.add_argument("--input", required=True, help="parquet/JSON/JSONL file or a folder of them (searched recursively)")
    ap.add_argument("--split", default=None, help="build from this split only (train, validation, test, ...): required when "
                                                  "the folder holds several")
    ap.add_argument("--max-users", type=int, default=None, help="cap on benchmark users (a seeded choice; default: all)")
    ap.add_argument("--out", required=True, help="output root; writes <out>/data/PICKAPIC/")
    ap.add_argument("--refs", type=int, default=5, help="reference pairs per user (K, default 5)")
    ap.add_argument("--images-dir", default=None, help="folder of <uid>.jpg/png for *_no_images exports")
    ap.add_argument("--min-pairs", type=int, default=10, help="clean pairs a user needs (default 10)")
    ap.add_argument("--min-test", type=int, default=1, help="test pairs a user needs (default 1)")
    ap.add_argument("--max-test", type=int, default=20, help="cap on test pairs per user (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-after", default=None, help="ISO time; only later pairs may be test pairs")
    args = ap.parse_args(argv)
    try:
        stats = build_pickapic_benchmark(
            args.input, args.out, n_refs=args.refs, images_dir=args.images_dir, min_pairs=args.min_pairs,
            min_test=args.min_test, max_test=args.max_test, seed=args.seed, test_after=args.test_after,
            split=args.split, max_users=args.max_users,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    oracle = stats["generator_oracle"]
    tie = "n/a" if stats["tie_rate"] is None else f"{stats['tie_rate']:.3f}"
    print(f"wrote {stats['benchmark_json']}: {stats['pairs']} pairs from {stats['users']} users; "
          f"tie rate {tie}; same-generator share {stats['same_generator_share']:.3f}; "
          f"generator oracle accuracy {oracle['accuracy']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
