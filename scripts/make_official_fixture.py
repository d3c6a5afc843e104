"""Local stand-ins for the released artifacts, in their official layouts (docs/evaluation.md, "Reproduce the
paper's tables"): run the paper's evaluation commands as written, with the tiny model standing in for the 7B.

    python scripts/make_data.py out_dir=/tmp/pt_repro/synthetic users.train_sft=1 users.train_grpo=1 \
        users.SP_ID=4 users.SP_OD=4 users.MP_ID=4 users.MP_OD=4 contact_sheets=false workers=1
    python scripts/make_official_fixture.py --synthetic /tmp/pt_repro/synthetic --out /tmp/pt_repro

writes under --out:
  hub/datasets--ZhouSimple--PreferImg-Bench/   a hub cache entry: blobs/<sha256> + refs/main +
      snapshots/<REVISION>/data/<SUBSET>/{<SUBSET>.json, images/*} as relative symlinks into blobs/
      (SP_ID, SP_OD, MP_ID, MP_OD from the synthetic bench; PICKAPIC built by preferthinker.data.pickapic
      from a small Pick-a-Pic v2-shaped export)
  PreferThinker_model/   an untrained tiny Qwen2.5-VL whose tokenizer knows the official eval prompt (the
      released checkpoint's stand-in: it runs the protocol, its accuracy means nothing)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REVISION = "4cdc1efc00000000000000000000000000fa57e5"  # a fixed stand-in commit hash: the commands name this folder
SUBSETS = ("SP_ID", "SP_OD", "MP_ID", "MP_OD")


def hub_snapshot(plain: Path, repo_dir: Path, revision: str = REVISION) -> Path:
    """Lay ``plain`` out as a hub cache entry (files in blobs/ named by their sha256, the snapshot a tree of
    relative symlinks into them) and return the snapshot folder."""
    blobs, snap = repo_dir / "blobs", repo_dir / "snapshots" / revision
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    blobs.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    for f in sorted(p for p in plain.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / f.relative_to(plain)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", required=True, help="a dataset written by scripts/make_data.py (data/<SUBSET>/ ...)")
    ap.add_argument("--out", required=True, help="where hub/ and PreferThinker_model/ go")
    ap.add_argument("--pickapic-users", type=int, default=4, help="users of the stand-in PICKAPIC subset")
    args = ap.parse_args()
    from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer
    from preferthinker.data.pickapic import build_pickapic_benchmark
    from preferthinker.data.pickapic_fixture import write_export
    from preferthinker.data.schema import load_bench
    from preferthinker.modeling import build_tiny_model

    src, out = Path(args.synthetic), Path(args.out)
    missing = [s for s in SUBSETS if not (src / "data" / s / f"{s}.json").is_file()]
    if missing:
        print(f"error: {src} lacks {missing}; make it with scripts/make_data.py (see this script's docstring)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        plain = Path(tmp) / "bench"
        for s in SUBSETS:
            shutil.copytree(src / "data" / s, plain / "data" / s)
        export = Path(tmp) / "pickapic_export"
        write_export(export, args.pickapic_users * 15, side=64)
        build_pickapic_benchmark(export, plain, split="train", max_users=args.pickapic_users)
        for extra in ("stats.json", "split_ids.jsonl"):  # builder side files, not part of the released bench
            (plain / "data" / "PICKAPIC" / extra).unlink()
        snap = hub_snapshot(plain, out / "hub" / "datasets--ZhouSimple--PreferImg-Bench")
    records = [r for s in SUBSETS for r in load_bench(snap / "data" / s / f"{s}.json")]
    model = out / "PreferThinker_model"
    if model.exists():
        shutil.rmtree(model)
    build_tiny_model(model, corpus_for_tokenizer(records, PromptSpec(style="official_eval", system="official_eval")),
                     min_pixels=3136, max_pixels=3136)
    print(f"bench (hub snapshot): {snap}\nmodel stand-in: {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
