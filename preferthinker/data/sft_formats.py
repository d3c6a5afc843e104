"""SFT training files in the forms users bring, detected from the file, read into ``PreferenceRecord`` s.

* **official** (ours and the release's): official keys (``imageA``, ``imageB``, ``prefered_images``,
  ``non_prefered_images``, ...) with ``conversations = [instruction, CoT]``; one object per line (JSONL) or
  a JSON list of them.
* **sharegpt** (LLaMA-Factory's multimodal ShareGPT form, the usual Qwen2.5-VL SFT data): ``messages``
  (``role``/``content``) or ``conversations`` (``from``/``value``) plus ``images``, a list of paths whose
  ``<image>`` placeholders sit in the user text in the official order (preferred, non-preferred, Image A,
  Image B). Which image is which is read from the text before each placeholder (the official intros and
  the "Image A" / "Image B" captions); the record's own system prompt is not used (the run's ``prompt=``
  decides it, so training and evaluation agree).

Anything else is a ``SchemaError`` naming the file, the record and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preferthinker.data.schema import (
    MAX_RECORDS,
    PreferenceRecord,
    SchemaError,
    _label_from_value,
    _log_warnings,
    check_images,
    default_image_root,
    record_from_dict,
)

FORMATS = ("official", "sharegpt")
_EXPECTED = ("expected one of: official JSONL / JSON list (keys imageA, imageB, prefered_images, non_prefered_images, "
             "conversations=[instruction, CoT]) or LLaMA-Factory/ShareGPT ('messages' or 'conversations', plus 'images')")
_USER_ROLES, _ASSISTANT_ROLES = ("user", "human"), ("assistant", "gpt")


def iter_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(record index, parsed object) of a JSONL file or a JSON list, whichever the file is."""
    if not path.is_file():
        raise SchemaError(path, None, None, "file does not exist")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):  # a JSON list (LLaMA-Factory's dataset files usually are)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SchemaError(path, None, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if len(data) > MAX_RECORDS:
            raise SchemaError(path, None, None, f"{len(data)} records exceeds the limit {MAX_RECORDS}")
        yield from enumerate(data)
        return
    index = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(path, index, None, f"malformed JSON on line {line_no}: {e.msg}") from None
            yield index, obj
            index += 1
            if index > MAX_RECORDS:
                raise SchemaError(path, None, None, f"more than {MAX_RECORDS} records")


def detect_format(obj: Any, *, file: Any = None, index: int | None = 0) -> str:
    """``official`` or ``sharegpt`` from one record's keys; SchemaError naming what was expected otherwise."""
    if isinstance(obj, dict):
        if "imageA" in obj and "conversations" in obj:
            return "official"
        if ("messages" in obj or "conversations" in obj) and "images" in obj:
            return "sharegpt"
        got = sorted(obj)[:12]
    else:
        got = type(obj).__name__
    raise SchemaError(file, index, None, f"unrecognised SFT record ({_EXPECTED}); got {got}")


def _turns(obj: dict, *, file, index) -> list[tuple[str, str]]:
    key = "messages" if "messages" in obj else "conversations"
    turns = obj[key]
    if not isinstance(turns, list) or not turns:
        raise SchemaError(file, index, key, "must be a non-empty list of turns")
    out = []
    for k, t in enumerate(turns):
        role = t.get("role", t.get("from")) if isinstance(t, dict) else None
        text = t.get("content", t.get("value")) if isinstance(t, dict) else None
        if not isinstance(role, str) or not isinstance(text, str):
            raise SchemaError(file, index, f"{key}[{k}]", "each turn needs role/content (or from/value) strings")
        out.append((role.lower(), text))
    return out


def _slot(before: str, current: str) -> str:
    """Which image a placeholder is, from the text written before it (and the previous image's slot):
    a caption "Image A"/"Image B" right before it, else the last intro (non-preferred checked first: it
    contains "preferred")."""
    tail = before.rstrip().rstrip(":").rstrip()
    if tail.endswith("Image A"):
        return "A"
    if tail.endswith("Image B"):
        return "B"
    low = before.lower()
    if "non-prefer" in low or "disliked" in low:
        return "non_preferred"
    if "prefer" in low or "liked" in low:
        return "preferred"
    return current


def _relative(path: Any, root: Path, *, file, index, fld) -> str:
    """An image path relative to ``root``: LLaMA-Factory files often hold absolute paths; one below the
    image root is made relative, one elsewhere is refused (image paths may not leave the root)."""
    if not isinstance(path, str) or not path.strip():
        raise SchemaError(file, index, fld, f"image path must be a non-empty string, got {path!r}")
    if not os.path.isabs(path):
        return path
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        raise SchemaError(file, index, fld, f"absolute image path {path!r} is not below the image root {root}; "
                                            f"set data.image_root to a folder that holds it") from None


def sharegpt_record(obj: dict, image_root: Path, *, file: Any = None, index: int | None = None) -> PreferenceRecord:
    """One LLaMA-Factory/ShareGPT record -> PreferenceRecord (the images sorted into their official slots)."""
    turns = _turns(obj, file=file, index=index)
    users = [t for r, t in turns if r in _USER_ROLES]
    answers = [t for r, t in turns if r in _ASSISTANT_ROLES]
    if not users or not answers:
        raise SchemaError(file, index, "messages", "needs a user turn and an assistant turn (the CoT)")
    user, response = users[0], answers[-1]
    images = obj["images"]
    if not isinstance(images, list):
        raise SchemaError(file, index, "images", f"must be a list of paths, got {type(images).__name__}")
    parts = user.split("<image>")
    if len(parts) - 1 != len(images):
        raise SchemaError(file, index, "images", f"{len(images)} images but {len(parts) - 1} <image> placeholders in the user turn")
    slots: dict[str, list[str]] = {"preferred": [], "non_preferred": [], "A": [], "B": []}
    current, seen = "preferred", ""
    for k, img in enumerate(images):
        seen = parts[k]
        current = _slot(seen, current)
        slots[current].append(_relative(img, image_root, file=file, index=index, fld=f"images[{k}]"))
    if len(slots["A"]) != 1 or len(slots["B"]) != 1:
        raise SchemaError(file, index, "images", "cannot tell the candidates apart: the user turn must caption exactly one "
                                                 "image 'Image A' and one 'Image B' (text right before their <image>), in the official order; "
                                                 f"found {len(slots['A'])} and {len(slots['B'])}")
    # checked here first so that an error names the ShareGPT field, not the official one it is copied to
    _label_from_value(response, file=file, index=index, fld="assistant turn", response=True)
    return record_from_dict({"imageA": slots["A"][0], "imageB": slots["B"][0], "prefered_images": slots["preferred"],
                            "non_prefered_images": slots["non_preferred"],
                            "conversations": [{"value": parts[-1].strip()}, {"value": response}]},
                           file=file, index=index, kind="train")


def load_sft_records(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
                     validate_images: bool = True) -> tuple[list[PreferenceRecord], str]:
    """Read an SFT file in any supported form; returns (records, detected format). The first record decides
    the form and every record must have it (a mixed file is an error naming the first odd record)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else default_image_root(path)
    out: list[PreferenceRecord] = []
    fmt = None
    for i, obj in iter_objects(path):
        kind = detect_format(obj, file=path, index=i)
        if fmt is None:
            fmt = kind
        elif kind != fmt:
            raise SchemaError(path, i, None, f"record is {kind} but the file started as {fmt}; one form per file")
        rec = record_from_dict(obj, file=path, index=i, kind="train") if kind == "official" else sharegpt_record(obj, root, file=path, index=i)
        if validate_images:
            check_images(rec, root, file=path, index=i)
        out.append(rec)
    if not out:
        raise SchemaError(path, None, None, f"no records ({_EXPECTED})")
    _log_warnings(path, out)
    return out, str(fmt)

