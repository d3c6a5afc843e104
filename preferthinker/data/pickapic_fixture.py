"""A Pick-a-Pic v2-shaped export made locally (nothing downloaded): the HF layout
``data/train-NNNNN-of-NNNNN.parquet``, the real column names, unique JPEG bytes in ``jpg_0``/``jpg_1``.
Used by ``benchmarks/pickapic_memory.py`` (a multi-GB export, peak memory of the builder) and
``scripts/make_official_fixture.py`` (a small PICKAPIC subset for the reproduction commands)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

COLUMNS = ("ranking_id", "user_id", "caption", "created_at", "image_0_uid", "image_1_uid", "model_0", "model_1",
           "label_0", "label_1", "has_label", "are_different", "best_image_uid", "jpg_0", "jpg_1")
MODELS = ("sdxl", "sd21", "dreamlike", "openjourney")


def jpeg_pool(n: int, side: int, seed: int) -> list[bytes]:
    """``n`` noise JPEGs (incompressible, like real image bytes in a parquet file)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_export(root: Path, n_rows: int, *, pairs_per_user: int = 15, rows_per_shard: int = 2048, row_group: int = 1024,
                 side: int = 384, seed: int = 0, split: str = "train") -> dict:
    """Write ``n_rows`` pairs under ``root/data``; each user has ``pairs_per_user`` pairs, ten minutes apart.
    Every image is unique: a pool JPEG with its uid appended after the end marker (decoders ignore it), so no
    pair is byte-identical. Returns the export's bytes, rows, users, shards and row-group size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = jpeg_pool(64, side, seed)
    n_users = max(1, n_rows // pairs_per_user)
    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2023, 1, 1)
    n_shards = max(1, (n_rows + rows_per_shard - 1) // rows_per_shard)
    for s in range(n_shards):
        cols: dict[str, list] = {k: [] for k in COLUMNS}
        for i in range(s * rows_per_shard, min(n_rows, (s + 1) * rows_per_shard)):
            user, k = i % n_users, i // n_users
            label0 = float(rng.integers(0, 2))
            u0, u1 = f"img-{i:08d}-0", f"img-{i:08d}-1"
            row = {"ranking_id": i, "user_id": user, "caption": f"prompt {i} of user {user}: a lighthouse at dusk",
                   "created_at": t0 + timedelta(minutes=10 * k, seconds=user), "image_0_uid": u0, "image_1_uid": u1,
                   "model_0": MODELS[i % 4], "model_1": MODELS[(i + 1) % 4], "label_0": label0, "label_1": 1.0 - label0,
                   "has_label": True, "are_different": True, "best_image_uid": u0 if label0 == 1.0 else u1,
                   "jpg_0": pool[(2 * i) % len(pool)] + u0.encode(), "jpg_1": pool[(2 * i + 1) % len(pool)] + u1.encode()}
            for key in COLUMNS:
                cols[key].append(row[key])
        pq.write_table(pa.table(cols), data / f"{split}-{s:05d}-of-{n_shards:05d}.parquet", row_group_size=row_group,
                       compression="none")
    size = sum(f.stat().st_size for f in data.iterdir())
    return {"bytes": size, "rows": n_rows, "users": n_users, "shards": n_shards, "row_group_rows": row_group}


def rows_for_size(gb: float, side: int = 384, seed: int = 0) -> int:
    """How many rows make an export of about ``gb`` GB with ``side``-pixel noise JPEGs."""
    pool = jpeg_pool(8, side, seed)
    return int(gb * 1e9 / (2 * sum(map(len, pool)) / len(pool)))
