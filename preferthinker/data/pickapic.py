"""Per-user real-user benchmark from a LOCAL Pick-a-Pic export (v1/v2, with or without image bytes).

Input: one parquet / JSON (a list of rows) / JSONL file, or a folder of them (the HF shards), with
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
4. images of the selection are decoded (PIL) — a corrupt/missing image or a pair whose two images
   are byte-identical removes that pair and the selection is redone;
5. A/B order: exactly half the test pairs (±1) show the winner as "Image A", assigned by a seeded
   shuffle.

Output (official layout): ``<out_root>/data/PICKAPIC/PICKAPIC.json`` (a JSON list; image paths are
relative to ``<out_root>/data/PICKAPIC/images/``, where the original image bytes are written as
``<uid>.<ext>``), ``stats.json`` and ``split_ids.jsonl`` (ids and roles, to publish a split without
images).

CLI: ``python -m preferthinker.data.pickapic --input X --out Y [--refs 5]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
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

REQUIRED_COLUMNS: tuple[str, ...] = (
    "ranking_id", "user_id", "caption", "created_at", "image_0_uid", "image_1_uid",
    "model_0", "model_1", "label_0", "has_label", "are_different",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("label_1", "best_image_uid", "num_example_per_prompt")
IMAGE_COLUMNS: tuple[str, ...] = ("jpg_0", "jpg_1")
SUBSET = "PICKAPIC"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
_MAX_ROUNDS = 200


@dataclass
class PickapicConfig:
    n_refs: int = 5            # earliest pairs per user used as references (K)
    min_pairs: int = 10        # clean, tie-free pairs a user needs to be considered
    min_test: int = 1          # test pairs a user needs after the reference/test disjointness filters
    max_test: int = 20         # cap on test pairs per user (heavy users), seeded random subset
    seed: int = 0
    test_after: str | None = None  # ISO time: only pairs created strictly later may be test pairs

    def validate(self) -> None:
        if self.n_refs < 1:
            raise ValueError(f"n_refs must be >= 1, got {self.n_refs}")
        if self.min_test < 1:
            raise ValueError(f"min_test must be >= 1, got {self.min_test}")
        if self.max_test < self.min_test:
            raise ValueError(f"max_test ({self.max_test}) must be >= min_test ({self.min_test})")
        if self.min_pairs < self.n_refs + self.min_test:
            raise ValueError(f"min_pairs ({self.min_pairs}) must be >= n_refs + min_test "
                             f"({self.n_refs + self.min_test})")


# --------------------------------------------------------------------------------------- reading
def _input_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".parquet", ".json", ".jsonl"))
        if not files:
            raise ValueError(f"{p}: folder holds no .parquet/.json/.jsonl file")
        return files
    if not p.is_file():
        raise ValueError(f"{p}: no such file or folder")
    return [p]


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a bad file
        raise ValueError(f"{path}: unreadable parquet file ({type(exc).__name__}: {exc})") from None


def _read_json_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    rows: list[Any]
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            if isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()):
                # column-oriented JSON ({"col": [...], ...})
                n = len(next(iter(data.values()), []))
                rows = [{k: v[i] for k, v in data.items()} for i in range(n)]
            elif isinstance(data, list):
                rows = data
            else:
                raise ValueError("top level must be a list of rows")
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable JSON ({exc})") from None
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValueError(f"{path}: row {i} is a {type(r).__name__}, not an object")
    return rows


def _check_columns(path: Path, columns: Sequence[str], rows: Sequence[Mapping] | None = None) -> None:
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ValueError(f"{path}: missing required column {col!r}")
    if rows is not None:  # JSON: every row must carry every required key
        for i, r in enumerate(rows):
            for col in REQUIRED_COLUMNS:
                if col not in r:
                    raise ValueError(f"{path}: missing required column {col!r} in row {i}")


def load_rows(path: str | os.PathLike) -> tuple[list[dict], dict[str, bool]]:
    """Metadata rows of every input file (image bytes are NOT loaded here).

    Returns (rows, has_image_bytes per file). Each row gets ``_file`` and ``_row`` for provenance.
    """
    out: list[dict] = []
    has_bytes: dict[str, bool] = {}
    for f in _input_files(path):
        if _is_parquet(f):
            pf = _parquet_file(f)
            names = list(pf.schema_arrow.names)
            _check_columns(f, names)
            cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]
            try:
                rows = pf.read(columns=cols).to_pylist()
            except Exception as exc:
                raise ValueError(f"{f}: unreadable parquet file ({type(exc).__name__}: {exc})") from None
            has_bytes[str(f)] = all(c in names for c in IMAGE_COLUMNS)
        else:
            raw = _read_json_rows(f)
            names = list(dict.fromkeys(k for r in raw for k in r))
            _check_columns(f, names if raw else REQUIRED_COLUMNS, raw)
            keep = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
            rows = [{k: v for k, v in r.items() if k in keep} for r in raw]
            has_bytes[str(f)] = bool(raw) and all(all(c in r for c in IMAGE_COLUMNS) for r in raw)
        for i, r in enumerate(rows):
            r["_file"] = str(f)
            r["_row"] = i
            out.append(r)
    return out, has_bytes


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


def clean_rows(rows: Sequence[Mapping]) -> tuple[list[dict], dict[str, int]]:
    """Apply the row filters; returns (clean rows sorted by time, counts of what was dropped).

    A clean row gets ``ts`` (seconds), ``winner``/``loser`` (image uids) and ``winner_model``/``loser_model``.
    """
    counts = Counter({k: 0 for k in (
        "rows_read", "dropped_no_label", "dropped_not_different", "ties", "dropped_invalid_label",
        "dropped_inconsistent_best_uid", "dropped_duplicate_ranking_id", "dropped_same_image",
        "dropped_duplicate_image_pair",
    )})
    counts["rows_read"] = len(rows)
    stage: list[dict] = []
    for r in rows:
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
        stage.append({
            **{k: v for k, v in r.items()},
            "ts": _timestamp(r["created_at"], r.get("_file", "<input>")),
            "user": _id_str(r["user_id"]),
            "rid": _id_str(r["ranking_id"]),
            "winner": winner, "loser": loser,
            "winner_model": str(win_model), "loser_model": str(lose_model),
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
    return sel


# --------------------------------------------------------------------------------------- images
def _to_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, Mapping):  # HF Image feature form {"bytes": ..., "path": ...}
        return _to_bytes(value.get("bytes"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    if isinstance(value, list) and all(isinstance(x, int) for x in value):
        try:
            return bytes(value)
        except ValueError:
            return None
    return None


def _decode(data: bytes | None) -> str | None:
    """Extension of a fully decodable image, else None."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
    except Exception:
        return None
    return _PIL_EXT.get(fmt or "", ".img")


def _fetch_from_inputs(files: Sequence[str], wanted: set[str]) -> dict[str, bytes | None]:
    """Scan the input files for the image bytes of ``wanted`` uids (first occurrence wins)."""
    found: dict[str, bytes | None] = {}
    cols = ["image_0_uid", "image_1_uid", *IMAGE_COLUMNS]
    for f in files:
        if len(found) == len(wanted):
            break
        path = Path(f)
        if _is_parquet(path):
            pf = _parquet_file(path)
            try:
                batches = (b.to_pylist() for b in pf.iter_batches(batch_size=256, columns=cols))
                for batch in batches:
                    for r in batch:
                        for side in (0, 1):
                            uid = _uid(r[f"image_{side}_uid"])
                            if uid in wanted and uid not in found:
                                found[uid] = _to_bytes(r.get(f"jpg_{side}"))
            except Exception as exc:
                raise ValueError(f"{path}: unreadable parquet file ({type(exc).__name__}: {exc})") from None
        else:
            for r in _read_json_rows(path):
                for side in (0, 1):
                    uid = _uid(r.get(f"image_{side}_uid"))
                    if uid in wanted and uid not in found:
                        found[uid] = _to_bytes(r.get(f"jpg_{side}"))
    return found


def _fetch_from_dir(images_dir: Path, wanted: set[str]) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for uid in wanted:
        data = None
        for ext in _IMAGE_EXTS:
            p = images_dir / f"{uid}{ext}"
            if p.is_file():
                data = p.read_bytes()
                break
        found[uid] = data
    return found


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
) -> dict:
    """Build ``<out_root>/data/PICKAPIC/`` from a local Pick-a-Pic export; returns the stats dict."""
    cfg = PickapicConfig(n_refs=n_refs, min_pairs=min_pairs, min_test=min_test, max_test=max_test,
                         seed=seed, test_after=test_after)
    cfg.validate()
    rows, has_bytes = load_rows(input_path)
    img_dir = Path(images_dir) if images_dir is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise ValueError(f"{img_dir}: images_dir is not a folder")
    lacking = [f for f, ok in has_bytes.items() if not ok]
    if lacking and img_dir is None:
        raise ValueError(f"{lacking[0]}: missing image columns {list(IMAGE_COLUMNS)} (a *_no_images export); "
                         "pass images_dir holding <image uid>.jpg/.png")
    clean, counts = clean_rows(rows)
    n_decisive_pool = counts["rows_read"] - counts["dropped_no_label"] - counts["dropped_not_different"]

    files = list(has_bytes)
    byte_files = [f for f in files if has_bytes[f]]
    images: dict[str, tuple[bytes, str] | None] = {}
    bad_pairs: set[str] = set()
    identical_pairs = 0
    sel = Selection()
    for rounds in range(1, _MAX_ROUNDS + 1):
        bad_uids = {u for u, v in images.items() if v is None}
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
        wanted = {x for r in chosen for x in (r["winner"], r["loser"])} - set(images)
        if wanted:
            fetched: dict[str, bytes | None] = _fetch_from_inputs(byte_files, wanted) if byte_files else {}
            missing = {u for u in wanted if fetched.get(u) is None}
            if missing and img_dir is not None:
                fetched.update({k: v for k, v in _fetch_from_dir(img_dir, missing).items() if v is not None})
            for uid in wanted:
                data = fetched.get(uid)
                ext = _decode(data)
                images[uid] = (data, ext) if ext is not None else None
        new_bad = set()
        for r in chosen:
            iw, il = images.get(r["winner"]), images.get(r["loser"])
            if iw is None or il is None:
                new_bad.add(r["rid"])
            elif iw[0] == il[0]:
                new_bad.add(r["rid"])
                identical_pairs += 1
        if not new_bad:
            break
        bad_pairs |= new_bad
    else:  # pragma: no cover - each round removes at least one pair, so this needs a pathological input
        raise RuntimeError(f"{input_path}: selection did not settle after {_MAX_ROUNDS} rounds")

    out_dir = Path(out_root) / "data" / SUBSET
    image_out = out_dir / "images"
    image_out.mkdir(parents=True, exist_ok=True)
    used = {x for u in sel.users for r in (*u.refs, *u.tests) for x in (r["winner"], r["loser"])}
    ext = {}
    for uid in sorted(used):
        data, suffix = images[uid]  # type: ignore[misc]
        ext[uid] = suffix
        target = image_out / f"{uid}{suffix}"
        if not target.exists() or target.stat().st_size != len(data):
            target.write_bytes(data)
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
        "pairs_dropped_bad_image": len(bad_pairs) - identical_pairs,
        "pairs_dropped_identical_bytes": identical_pairs,
        "images_unreadable": sum(1 for v in images.values() if v is None),
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
    ap.add_argument("--input", required=True, help="parquet/JSON/JSONL file or a folder of them")
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
