"""Streaming reads of a local Pick-a-Pic export for ``data/pickapic.py``.

A full v2 export is hundreds of parquet shards and tens of GB of image bytes, so nothing here holds more
than one batch of rows: metadata rows are yielded one parquet batch (or JSONL line) at a time without the
image columns, and the images a selection needs are written to disk as they stream past, keeping only
each one's extension and digest. Inputs are found recursively under a folder, one split at a time (the HF
layout ``data/train-00000-of-00645.parquet`` or ``<split>/...``): mixing splits would put test users'
pairs among references.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS: tuple[str, ...] = (
    "ranking_id", "user_id", "caption", "created_at", "image_0_uid", "image_1_uid",
    "model_0", "model_1", "label_0", "has_label", "are_different",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("label_1", "best_image_uid", "num_example_per_prompt")
IMAGE_COLUMNS: tuple[str, ...] = ("jpg_0", "jpg_1")
_UID_COLUMNS = ("image_0_uid", "image_1_uid")
_SUFFIXES = (".parquet", ".json", ".jsonl")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
# HF Pick-a-Pic v2 split names; longest first so that "validation_unique-..." is not read as "validation"
SPLITS = ("validation_unique", "test_unique", "validation", "train", "test")
_SPLIT_NAME = re.compile(rf"^({'|'.join(SPLITS)})(?:[-_.]|$)")
METADATA_BATCH = 2048  # rows per parquet batch without image bytes (a few MB)
IMAGE_BATCH = 16       # rows per parquet batch with image bytes (a few MB at Pick-a-Pic's ~0.5-1 MB per image)
# Parquet reads: stream each column chunk through a 1 MB buffer instead of loading it whole (a row group of
# image bytes can be hundreds of MB) and do not pre-buffer whole row groups.
_PARQUET_KW = {"buffer_size": 1 << 20, "pre_buffer": False}


def split_of(path: Path, root: Path) -> str | None:
    """The split a file belongs to, from a folder named after it or its file-name prefix; None if unnamed."""
    rel = path.relative_to(root) if root in path.parents else Path(path.name)
    for part in rel.parts[:-1]:
        if part in SPLITS:
            return part
    m = _SPLIT_NAME.match(path.name)
    return m.group(1) if m else None


def input_files(path: str | Path, split: str | None = None) -> list[Path]:
    """Parquet/JSON/JSONL files of the export: the file itself, or every one under the folder (recursively),
    keeping ``split`` only. A folder holding several splits without ``split`` is an error."""
    p = Path(path)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; Pick-a-Pic v2 has {', '.join(sorted(SPLITS))}")
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ValueError(f"{p}: no such file or folder")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _SUFFIXES and not f.name.startswith("."))
    if not files:
        raise ValueError(f"{p}: folder holds no .parquet/.json/.jsonl file (searched recursively)")
    found = sorted({s for f in files if (s := split_of(f, p)) is not None})
    if split is not None:
        files = [f for f in files if split_of(f, p) == split]
        if not files:
            raise ValueError(f"{p}: no file of split {split!r} (splits present: {found or 'none named'})")
    elif len(found) > 1:
        raise ValueError(f"{p}: holds several splits ({', '.join(found)}); pass --split to build from one "
                         f"(mixing them would put one split's pairs among another's references)")
    return files


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, **_PARQUET_KW)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a bad file
        raise ValueError(f"{path}: unreadable parquet file ({type(exc).__name__}: {exc})") from None


def _rows_of_json(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file (streamed line by line) or of a JSON file (a list of rows, or column lists)."""
    try:
        if path.suffix.lower() == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, Mapping):
                            raise ValueError(f"row {i} is a {type(row).__name__}, not an object")
                        yield row
            return
        data = json.loads(path.read_text(encoding="utf-8"))  # a JSON document cannot be streamed; JSONL can
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable JSON ({exc})") from None
    if isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()):  # {"col": [...], ...}
        n = len(next(iter(data.values()), []))
        data = [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list):
        raise ValueError(f"{path}: unreadable JSON (top level must be a list of rows)")
    for i, r in enumerate(data):
        if not isinstance(r, Mapping):
            raise ValueError(f"{path}: row {i} is a {type(r).__name__}, not an object")
        yield r


def _check_columns(path: Path, columns: Iterable[str], row: int | None = None) -> None:
    names = set(columns)
    for col in REQUIRED_COLUMNS:
        if col not in names:
            raise ValueError(f"{path}: missing required column {col!r}" + (f" in row {row}" if row is not None else ""))


def iter_rows(files: Sequence[Path], has_bytes: dict[str, bool] | None = None) -> Iterator[dict]:
    """Metadata rows of every file, one batch at a time, without image bytes; each gets ``_file``/``_row``.
    ``has_bytes`` (filled in as files are read) says which files carry ``jpg_0``/``jpg_1``."""
    has_bytes = {} if has_bytes is None else has_bytes
    keep = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for f in files:
        if is_parquet(f):
            pf = parquet_file(f)
            names = list(pf.schema_arrow.names)
            _check_columns(f, names)
            has_bytes[str(f)] = all(c in names for c in IMAGE_COLUMNS)
            cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]
            i = 0
            try:
                for batch in pf.iter_batches(batch_size=METADATA_BATCH, columns=cols):
                    for r in batch.to_pylist():
                        r["_file"], r["_row"] = str(f), i
                        i += 1
                        yield r
            except ValueError:
                raise
            except Exception as exc:
                raise ValueError(f"{f}: unreadable parquet file ({type(exc).__name__}: {exc})") from None
        else:
            all_bytes = True
            i = -1
            for i, raw in enumerate(_rows_of_json(f)):
                _check_columns(f, raw, row=i)
                all_bytes = all_bytes and all(c in raw for c in IMAGE_COLUMNS)
                r = {k: v for k, v in raw.items() if k in keep}
                r["_file"], r["_row"] = str(f), i
                yield r
            has_bytes[str(f)] = all_bytes and i >= 0


def load_rows(path: str | Path, split: str | None = None) -> tuple[list[dict], dict[str, bool]]:
    """Every metadata row as a list (small exports and tests); ``build_pickapic_benchmark`` streams instead."""
    has_bytes: dict[str, bool] = {}
    rows = list(iter_rows(input_files(path, split), has_bytes))
    return rows, has_bytes


# --------------------------------------------------------------------------------------- images
def to_bytes(value: Any) -> bytes | None:
    """Image bytes from the forms exports use: raw bytes, HF's {"bytes": ...}, base64 text, a list of ints."""
    if value is None:
        return None
    if isinstance(value, Mapping):  # HF Image feature form {"bytes": ..., "path": ...}
        return to_bytes(value.get("bytes"))
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


def decode_ext(data: bytes | None) -> str | None:
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


ImageInfo = tuple[str, str]  # (extension, sha256 of the bytes): all the builder keeps of an image


class ImageWriter:
    """Writes each wanted image to ``out_dir/<uid><ext>`` the moment its bytes are seen (a good image once);
    remembers only extension and digest. ``found[uid]`` is that pair, or None for an unreadable image."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.found: dict[str, ImageInfo | None] = {}
        self.written: set[Path] = set()

    def offer(self, uid: str, data: bytes | None) -> None:
        if uid in self.found and self.found[uid] is not None:
            return
        ext = decode_ext(data)
        if ext is None:
            self.found.setdefault(uid, None)  # another copy later in the export may still be good
            return
        target = self.out_dir / f"{uid}{ext}"
        if not target.exists() or target.stat().st_size != len(data):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        self.written.add(target)
        self.found[uid] = (ext, hashlib.sha256(data).hexdigest())

    def good(self, uid: str) -> bool:
        return self.found.get(uid) is not None


def _uid(value: Any) -> str:
    return str(value).strip()


def stream_images(byte_files: Sequence[Path], wanted: set[str], writer: ImageWriter, images_dir: Path | None = None) -> None:
    """Offer ``writer`` every wanted image: from the export's image columns (a parquet row group's image
    columns are read only when its uid columns name a wanted image), then from ``images_dir`` for those
    still missing. Wanted uids never seen end up as None."""
    remaining = {u for u in wanted if not writer.good(u)}
    for f in byte_files:
        if not remaining:
            break
        if is_parquet(f):
            pf = parquet_file(f)
            try:
                for g in range(pf.num_row_groups):
                    uids = pf.read_row_group(g, columns=list(_UID_COLUMNS))
                    for side in (0, 1):
                        # one image column at a time: the Parquet reader holds about two decoded column chunks of
                        # the group at once whatever the batch size (measured, docs/benchmarks.md), so reading
                        # jpg_0 and jpg_1 together doubled the peak
                        col = f"image_{side}_uid"
                        if not {_uid(u) for u in uids.column(col).to_pylist()} & remaining:
                            continue
                        for batch in pf.iter_batches(batch_size=IMAGE_BATCH, row_groups=[g], columns=[col, f"jpg_{side}"]):
                            for r in batch.to_pylist():
                                uid = _uid(r[col])
                                if uid in remaining:
                                    writer.offer(uid, to_bytes(r.get(f"jpg_{side}")))
                                    if writer.good(uid):
                                        remaining.discard(uid)
                            del batch
            except ValueError:
                raise
            except Exception as exc:
                raise ValueError(f"{f}: unreadable parquet file ({type(exc).__name__}: {exc})") from None
        else:
            for r in _rows_of_json(f):
                for side in (0, 1):
                    uid = _uid(r.get(f"image_{side}_uid"))
                    if uid in remaining:
                        writer.offer(uid, to_bytes(r.get(f"jpg_{side}")))
                        if writer.good(uid):
                            remaining.discard(uid)
    if images_dir is not None:
        for uid in sorted(remaining):
            for ext in _IMAGE_EXTS:
                p = images_dir / f"{uid}{ext}"
                if p.is_file():
                    writer.offer(uid, p.read_bytes())
                    break
    for uid in wanted:
        writer.found.setdefault(uid, None)
