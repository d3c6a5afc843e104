"""Make the whole synthetic dataset: the four PreferImg-Bench-style splits and the training files.

Layout written under ``out_dir`` (the official one, so the official loaders read it)::

    data/<SUBSET>/<SUBSET>.json      SUBSET in SP_ID, SP_OD, MP_ID, MP_OD (official bench JSON list)
    data/<SUBSET>/images/*.png       paths in the JSON are relative to this folder
    train/sft.jsonl                  official training JSONL, conversations[1] = full CoT
    train/grpo.jsonl                 official training JSONL, conversations[1] = "<answer>Image X</answer>"
    train/images/*.png
    vocabulary.yaml                  snapshot of the vocabulary the data was made with
    manifest.json                    config, seed, hold-out rule, counts, label balance (no timings)
    stats.json                       per-split statistics (term frequencies, score margins, layouts)
    contact_<SPLIT>.png              first users of each split, one row each; contact_vocabulary.png

Every user is a pure function of (seed, split, index), so the bytes written do not depend on the
number of workers.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preferthinker.profile import ELEMENTS
from preferthinker.data.synthetic import render as R
from preferthinker.data.synthetic.features import measure
from preferthinker.data.synthetic.teacher import VERBOSITIES, describe_mode, passes_filter, teach
from preferthinker.data.synthetic.users import (
    BENCH_SPLITS,
    TERM_ORDERS,
    TRAIN_SPLITS,
    HeldOut,
    User,
    UserSettings,
    make_user,
    user_rng,
)
from preferthinker.data.synthetic.vocabulary import load_vocabulary

log = logging.getLogger("preferthinker.data.synthetic")

ALL_SPLITS = TRAIN_SPLITS + BENCH_SPLITS
# config keys that change how fast, not what, is written: left out of the manifest
RUNTIME_KEYS = ("workers", "progress", "overwrite", "out_dir", "run_dir", "task_name", "hydra")


class DataConfigError(ValueError):
    """A make_data config value that cannot work (the message names key, value and fix)."""


# ------------------------------------------------------------------------------------------------
# config


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default) if hasattr(cfg, key) else default


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


@dataclass(frozen=True)
class DataSettings:
    out_dir: Path
    seed: int
    image_size: int
    users: dict[str, int]
    verbosity: str
    describe_candidates: str
    workers: int
    progress: bool
    contact_sheets: bool
    contact_rows: int
    overwrite: bool
    user: UserSettings

    def manifest_config(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in raw.items() if k not in RUNTIME_KEYS}


def _err(key: str, value: Any, fix: str) -> DataConfigError:
    return DataConfigError(f"{key}={value!r}: {fix}")


def validate_config(cfg: Any) -> DataSettings:
    """Check every key of a make_data config and return typed settings (DataConfigError otherwise)."""
    raw = _plain(cfg) or {}

    def num(key: str, value: Any, kind=int, lo=None, hi=None, fix="") -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise _err(key, value, f"must be {'an integer' if kind is int else 'a number'}{fix}")
        value = kind(value)
        if lo is not None and value < lo:
            raise _err(key, value, f"must be >= {lo}{fix}")
        if hi is not None and value > hi:
            raise _err(key, value, f"must be <= {hi}{fix}")
        return value

    out_dir = raw.get("out_dir")
    if not out_dir or not isinstance(out_dir, str):
        raise _err("out_dir", out_dir, "must be a folder path")
    seed = num("seed", raw.get("seed", 0), lo=0, hi=2**63 - 1)
    size = num("image_size", raw.get("image_size", 56), lo=28, hi=R.MAX_SIZE, fix=" (the renderer needs at least one 28-pixel Qwen2.5-VL patch pair)")
    if size % 28:
        raise _err("image_size", size, "must be a multiple of 28 (Qwen2.5-VL resizes to multiples of 28; the renderer's pixel signatures would be resampled)")
    users_raw = raw.get("users") or {}
    if not isinstance(users_raw, Mapping):
        raise _err("users", users_raw, f"must map split names to user counts, splits: {list(ALL_SPLITS)}")
    unknown = [k for k in users_raw if k not in ALL_SPLITS]
    if unknown:
        raise _err("users", unknown, f"unknown split(s); known: {list(ALL_SPLITS)}")
    users = {}
    for split in ALL_SPLITS:
        n = users_raw.get(split, 0)
        users[split] = num(f"users.{split}", n, lo=0, hi=10_000_000)
    if users["train_sft"] < 1:
        raise _err("users.train_sft", users["train_sft"], "must be >= 1 (the SFT file needs at least one user)")
    for split in BENCH_SPLITS:
        if users[split] < 1:
            raise _err(f"users.{split}", users[split], "must be >= 1 (each bench split needs at least one user)")
    verbosity = raw.get("verbosity", "terse")
    if verbosity not in VERBOSITIES:
        raise _err("verbosity", verbosity, f"unknown verbosity; choose one of {list(VERBOSITIES)}")
    workers = raw.get("workers", 0)
    workers = num("workers", workers, lo=0, hi=1024, fix=" (0 = one per CPU core)")
    if workers == 0:
        workers = os.cpu_count() or 1
    num_refs = num("num_refs", raw.get("num_refs", 5), lo=2, hi=50, fix=" (MP users need at least one reference of each profile)")
    mp_fraction = num("train_mp_fraction", raw.get("train_mp_fraction", 0.5), kind=float, lo=0.0, hi=1.0)
    cand = raw.get("candidates") or {}
    p_pref = num("candidates.p_preferred", cand.get("p_preferred", 0.4), kind=float, lo=0.0, hi=1.0)
    p_non = num("candidates.p_non_preferred", cand.get("p_non_preferred", 0.3), kind=float, lo=0.0, hi=1.0)
    if p_pref + p_non > 1.0 + 1e-9:
        raise _err("candidates", cand, "p_preferred + p_non_preferred must be <= 1")
    if p_pref + p_non == 0.0 or (p_pref == 0 and p_non == 1) or (p_non == 0 and p_pref == 1):
        raise _err("candidates", cand, "these probabilities make every candidate pair tie; leave room for two different outcomes")
    ho_raw = raw.get("heldout") or {}
    try:
        heldout = HeldOut(
            modulus=num("heldout.modulus", ho_raw.get("modulus", 5), lo=2, hi=100),
            residue=num("heldout.residue", ho_raw.get("residue", 0), lo=0, hi=99),
            layouts=tuple(ho_raw.get("layouts", ("ring",)) or ()),
        )
    except ValueError as e:
        raise DataConfigError(str(e)) from None
    contact_rows = num("contact_rows", raw.get("contact_rows", 8), lo=1, hi=200)
    term_order = raw.get("mp_term_order", "drawn")
    if term_order not in TERM_ORDERS:
        raise _err("mp_term_order", term_order, f"choose one of {list(TERM_ORDERS)}")
    return DataSettings(
        out_dir=Path(out_dir),
        seed=seed,
        image_size=size,
        users=users,
        verbosity=verbosity,
        describe_candidates=_describe_mode(raw.get("describe_candidates", "checks")),
        workers=workers,
        progress=bool(raw.get("progress", True)),
        contact_sheets=bool(raw.get("contact_sheets", True)),
        contact_rows=contact_rows,
        overwrite=bool(raw.get("overwrite", True)),
        user=UserSettings(num_refs=num_refs, mp_fraction=mp_fraction, p_preferred=p_pref, p_non_preferred=p_non, heldout=heldout,
                          term_order=term_order),
    )


# ------------------------------------------------------------------------------------------------
# one user (runs in the worker processes)


def image_dir(out_dir: Path, split: str) -> Path:
    return out_dir / "train" / "images" if split in TRAIN_SPLITS else out_dir / "data" / split / "images"


@dataclass(frozen=True)
class _Job:
    out_dir: str
    seed: int
    size: int
    verbosity: str
    settings: UserSettings
    describe_candidates: str = "checks"


def _describe_mode(value: Any) -> str:
    """describe_candidates (see ``teacher.describe_mode``), as a config error naming the key."""
    try:
        return describe_mode(value)
    except ValueError:
        raise _err("describe_candidates", value, "choose true/terms, relations, sections, checks or false/none") from None


def _make_one(job: _Job, split: str, index: int) -> dict[str, Any]:
    vocab = load_vocabulary()
    user = make_user(job.seed, split, index, job.settings, vocab)
    folder = image_dir(Path(job.out_dir), split)
    arrays = {}
    layouts = Counter()
    for spec in user.images():
        layouts[R.make_content(spec.content_seed, user.layouts).layout] += 1
        arr = R.render_array(spec.content_seed, spec.profile, job.size, vocab=vocab, layouts=user.layouts)
        (folder / spec.name).write_bytes(R.png_bytes(arr))
        if spec is user.image_a or spec is user.image_b:
            arrays[spec.name] = arr
    rec = _record_dict(user, vocab)
    kept = True
    if split == "train_sft":
        need = job.verbosity != "terse"
        ma = measure(arrays[user.image_a.name]) if need else None
        mb = measure(arrays[user.image_b.name]) if need else None
        response = teach(
            user.prefer_attributes, user.non_preference, user.image_a.profile, user.image_b.profile,
            user.scores_a, user.scores_b, ma, mb,
            verbosity=job.verbosity, rng=user_rng(job.seed, split, index, stream=3), vocab=vocab,
            describe_candidates=job.describe_candidates,
        )
        kept = passes_filter(response, user.label, user.prefer_attributes, user.non_preference)
        rec["response"] = response
    elif split == "train_grpo":
        rec["response"] = f"<answer>{user.label}</answer>"
    return {"record": rec, "kept": kept, "kind": user.kind, "tie_draws": user.tie_draws, "n_images": len(user.images()), "layouts": dict(layouts)}


def _record_dict(user: User, vocab) -> dict[str, Any]:
    from preferthinker.data.synthetic.render import describe

    return {
        "user_id": user.user_id,
        "image_a": user.image_a.name,
        "image_b": user.image_b.name,
        "preferred": [s.name for s in user.liked],
        "non_preferred": [s.name for s in user.disliked],
        "label": user.label,
        "prefer_attributes": user.prefer_attributes,
        "non_prefer_attributes": dict(user.non_preference),
        "reference_prompt_list": [describe(s.content_seed, s.profile, user.layouts) for s in user.liked + user.disliked],
        "extra": {
            "user_type": user.kind,
            "true_scores_a": list(user.scores_a),
            "true_scores_b": list(user.scores_b),
            "true_profile_a": dict(user.image_a.profile),
            "true_profile_b": dict(user.image_b.profile),
            "preference_profiles": [dict(p) for p in user.preferences],
            "content_seeds": {
                "preferred": [s.content_seed for s in user.liked],
                "non_preferred": [s.content_seed for s in user.disliked],
                "A": user.image_a.content_seed,
                "B": user.image_b.content_seed,
            },
            "reference_profiles": {"preferred": [dict(s.profile) for s in user.liked]},
        },
    }


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job
    R.single_thread_blas()



def _work(task: tuple[str, int]) -> dict[str, Any]:
    assert _JOB is not None
    return _make_one(_JOB, task[0], task[1])


# ------------------------------------------------------------------------------------------------
# the dataset


def _records(results: Sequence[dict], split: str, instruction: str):
    from preferthinker.data.schema import PreferenceRecord

    out = []
    for r in results:
        d = dict(r["record"])
        if split in TRAIN_SPLITS:
            if not r["kept"]:
                continue
            d["instruction"] = instruction
        out.append(PreferenceRecord(**d))
    return out


def _split_stats(results: Sequence[dict], split: str, vocab) -> dict[str, Any]:
    recs = [r["record"] for r in results]
    labels = Counter(r["label"] for r in recs)
    margins = [abs(sum(r["extra"]["true_scores_a"]) - sum(r["extra"]["true_scores_b"])) for r in recs]
    pref_terms = {e: Counter() for e in ELEMENTS}
    for r in recs:
        for p in r["extra"]["preference_profiles"]:
            for e in ELEMENTS:
                pref_terms[e][p[e]] += 1
    layouts = Counter()
    for r in results:
        layouts.update(r["layouts"])
    per_el = np.array([[a == b for a, b in zip(r["extra"]["true_scores_a"], r["extra"]["true_scores_b"])] for r in recs]) if recs else np.zeros((0, 5))
    return {
        "users": len(recs),
        "kept": sum(1 for r in results if r["kept"]),
        "filtered_out": sum(1 for r in results if not r["kept"]),
        "images": sum(r["n_images"] for r in results),
        "user_types": dict(Counter(r["kind"] for r in results)),
        "labels": {"Image A": labels.get("Image A", 0), "Image B": labels.get("Image B", 0)},
        "label_balance_A": labels.get("Image A", 0) / max(len(recs), 1),
        "total_margin": {"mean": float(np.mean(margins)) if margins else 0.0, "histogram": {str(k): v for k, v in sorted(Counter(margins).items())}},
        "element_score_equal_share": {e: float(per_el[:, i].mean()) if len(per_el) else 0.0 for i, e in enumerate(ELEMENTS)},
        "tie_redraws": sum(r["tie_draws"] for r in results),
        "layouts": dict(sorted(layouts.items())),
        "preference_term_counts": {e: dict(sorted(pref_terms[e].items())) for e in ELEMENTS},
    }


def _clear(out_dir: Path, overwrite: bool) -> None:
    targets = [out_dir / "train", *[out_dir / "data" / s for s in BENCH_SPLITS]]
    existing = [t for t in targets if t.exists()] + [p for p in (out_dir / "manifest.json",) if p.exists()]
    if existing and not overwrite:
        raise DataConfigError(f"overwrite=false but {out_dir} already holds a dataset ({existing[0]}); pass overwrite=true or another out_dir")
    for t in targets:
        if t.exists():
            shutil.rmtree(t)
    for f in out_dir.glob("contact_*.png"):
        f.unlink()


def make_dataset(cfg: Any) -> dict[str, Any]:
    """Generate every split described by ``cfg`` (see configs/make_data.yaml). Returns the stats,
    with ``timing`` (seconds, images/s) added (timings are not written to disk: the files stay
    byte-identical across runs)."""
    from tqdm.auto import tqdm

    from preferthinker.data.schema import write_bench, write_train_jsonl
    from preferthinker.prompting import FINAL_INSTRUCTION

    s = validate_config(cfg)
    raw = _plain(cfg)
    vocab = load_vocabulary()
    out = s.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _clear(out, s.overwrite)
    for split in ALL_SPLITS:
        if s.users[split] > 0:
            image_dir(out, split).mkdir(parents=True, exist_ok=True)
    job = _Job(str(out), s.seed, s.image_size, s.verbosity, s.user, s.describe_candidates)
    tasks = {split: [(split, i) for i in range(s.users[split])] for split in ALL_SPLITS}
    total_users = sum(len(t) for t in tasks.values())
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {}
    bar = tqdm(total=total_users, desc="users", unit="user", disable=not s.progress, file=sys.stderr)
    pool = limiter = None
    try:
        if s.workers > 1:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = mp.get_context(method).Pool(s.workers, initializer=_init_worker, initargs=(job,))
        else:
            global _JOB
            _JOB = job
            limiter = R.single_thread_blas()
        for split in ALL_SPLITS:
            bar.set_description(split)
            res = []
            it = pool.imap(_work, tasks[split], chunksize=8) if pool else map(_work, tasks[split])
            for r in it:
                res.append(r)
                bar.update(1)
            results[split] = res
    finally:
        bar.close()
        if limiter is not None:
            limiter.restore_original_limits()
        if pool is not None:
            pool.close()
            pool.join()
    t_gen = time.perf_counter() - t0

    # files
    stats: dict[str, Any] = {}
    for split in BENCH_SPLITS:
        write_bench(_records(results[split], split, FINAL_INSTRUCTION), out / "data" / split / f"{split}.json")
        stats[split] = _split_stats(results[split], split, vocab)
    if s.users["train_sft"]:
        write_train_jsonl(_records(results["train_sft"], "train_sft", FINAL_INSTRUCTION), out / "train" / "sft.jsonl")
        stats["train_sft"] = _split_stats(results["train_sft"], "train_sft", vocab)
    if s.users["train_grpo"]:
        write_train_jsonl(_records(results["train_grpo"], "train_grpo", FINAL_INSTRUCTION), out / "train" / "grpo.jsonl")
        stats["train_grpo"] = _split_stats(results["train_grpo"], "train_grpo", vocab)
    (out / "vocabulary.yaml").write_text(vocab.source, encoding="utf-8")
    manifest = {
        "generator": "preferthinker.data.synthetic",
        "seed": s.seed,
        "image_size": s.image_size,
        "config": s.manifest_config(raw),
        "heldout_rule": s.user.heldout.describe(),
        "scoring_rule": "per element: preferred term 5, non-preferred term 1, any other term 3; total = sum; label = larger total; ties redrawn",
        "files": {
            **{split: f"data/{split}/{split}.json" for split in BENCH_SPLITS},
            "train_sft": "train/sft.jsonl" if s.users["train_sft"] else None,
            "train_grpo": "train/grpo.jsonl" if s.users["train_grpo"] else None,
        },
        "image_roots": {**{split: f"data/{split}/images" for split in BENCH_SPLITS}, "train": "train/images"},
        "counts": {k: {"users": v["users"], "kept": v["kept"], "images": v["images"], "labels": v["labels"]} for k, v in stats.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if s.contact_sheets:
        from preferthinker.data.synthetic.contact import contact_sheet

        for split in ALL_SPLITS:
            if results.get(split):
                contact_sheet([r["record"] for r in results[split][: s.contact_rows]], image_dir(out, split), title=split).save(out / f"contact_{split}.png", optimize=False)
        R.vocabulary_sheet(s.image_size, columns=6, seed=s.seed, scale=max(1, 112 // s.image_size)).save(out / "contact_vocabulary.png")
    t_all = time.perf_counter() - t0
    n_images = sum(v["images"] for v in stats.values())
    stats["timing"] = {
        "generate_s": round(t_gen, 3),
        "total_s": round(t_all, 3),
        "images": n_images,
        "images_per_s": round(n_images / max(t_gen, 1e-9), 1),
        "workers": s.workers,
    }
    log.info("wrote %d users / %d images to %s in %.1fs (%.0f images/s)", total_users, n_images, out, t_all, n_images / max(t_gen, 1e-9))
    return stats
