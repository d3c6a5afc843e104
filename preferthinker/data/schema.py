"""Official PreferImg data schema <-> dataclasses.

Two on-disk forms, both from the released code:

* **Bench JSON** (``data/<SUBSET>/<SUBSET>.json``): a JSON list of objects with ``imageA``, ``imageB``,
  ``prefered_images``, ``non_prefered_images`` (sic) and ``conversations[0].value`` = the label,
  exactly ``"Image A"`` or ``"Image B"``.
* **Training JSONL**: one object per line with ``user_id``, ``imageA``, ``imageB``, ``prefered_images``,
  ``non_prefered_images``, ``prefer_attributes``, ``non_prefer_attributes``, ``reference_prompt_list`` and
  ``conversations = [{value: instruction}, {value: response}]``; the response is the full CoT for SFT and
  ``<answer>Image B</answer>`` for GRPO, so the label is read from the response's last answer.

Every problem is a ``SchemaError`` naming the file, the record index and the field. Image paths are
relative to an image root and may not climb out of it (absolute paths, ``..``); a symlink inside the root
is followed wherever it points, as in a hub snapshot whose files link into the cache's ``blobs/``.

What the official eval script tolerates (an empty reference list, identical candidates, a profile that
lacks an element) is not an error here either: the record loads, carries a warning code in
``PreferenceRecord.warnings`` and the evaluation counts those codes in results.json.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preferthinker.profile import canonicalize_profile

log = logging.getLogger(__name__)

LABELS = ("Image A", "Image B")
# Keys the loaders interpret; everything else in a record is kept in ``extra`` and written back.
_KNOWN = {
    "imageA", "imageB", "prefered_images", "non_prefered_images", "conversations", "user_id",
    "prefer_attributes", "non_prefer_attributes", "reference_prompt_list",
}
MAX_RECORDS = 10_000_000
MAX_REFS_STORED = 1000  # more references than this in one record is a corrupt file, not a user

# Tolerated problems (the official eval script runs on through them): warning codes kept on the record.
WARN_EMPTY_REFS = "empty_reference_list"  # the official prompt then skips the whole reference part
WARN_SAME_CANDIDATES = "identical_candidates"
WARN_PARTIAL_PROFILE = "profile_missing_element"  # the profile is dropped: no profile metric / reward for it
# A label is a bare "Image A"/"Image B" or a bare answer block, nothing else (the official script compares
# the label string exactly; a fallback that searched any text for an answer read instruction texts as labels).
_ANSWER_BLOCK = re.compile(r"<answer>\s*(Image A|Image B)\s*</answer>")


class SchemaError(ValueError):
    """A record that does not follow the official schema. The message names file, record and field."""

    def __init__(self, file: str | os.PathLike | None, index: int | None, fld: str | None, problem: str):
        self.file, self.index, self.field, self.problem = str(file) if file else None, index, fld, problem
        where = [p for p in (self.file, f"record {index}" if index is not None else None, f"field {fld!r}" if fld else None) if p]
        super().__init__(f"{': '.join(where)}: {problem}" if where else problem)


@dataclass
class PreferenceRecord:
    """One pairwise sample: references of one user, two candidates, which one the user prefers."""

    image_a: str
    image_b: str
    preferred: list[str]
    non_preferred: list[str]
    label: str  # "Image A" | "Image B"
    user_id: str | None = None
    prefer_attributes: dict[str, str] | None = None
    non_prefer_attributes: dict[str, str] | None = None
    reference_prompt_list: list[str] | None = None
    response: str | None = None  # assistant target (training JSONL conversations[1].value)
    instruction: str | None = None  # training JSONL conversations[0].value
    extra: dict[str, Any] = field(default_factory=dict)
    # tolerated problems found when loading (WARN_* codes); not written back, not part of equality
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)

    def swapped(self) -> PreferenceRecord:
        """The same pair with A and B exchanged (position-bias runs). Drops the response, whose
        A/B wording would no longer match."""
        out = PreferenceRecord(**{**self.__dict__, "extra": dict(self.extra), "warnings": list(self.warnings)})
        out.image_a, out.image_b = self.image_b, self.image_a
        out.label = "Image B" if self.label == "Image A" else "Image A"
        out.response = None
        for a, b in (("true_scores_a", "true_scores_b"),):
            if a in out.extra or b in out.extra:
                out.extra[a], out.extra[b] = self.extra.get(b), self.extra.get(a)
        return out


# ------------------------------------------------------------------------------------------------
# paths


def resolve_image(root: str | os.PathLike, rel: str, *, file: Any = None, index: int | None = None, fld: str = "image", check_exists: bool = True) -> Path:
    """Join ``rel`` to ``root``. Absolute paths and ``..`` that climb out of the root are refused on the
    path text itself; the joined path is NOT resolved, so a symlink inside the root is read wherever it
    points. That is what a hub download needs: ``snapshots/<rev>/data/SP_ID/images/a.png`` is a link to
    ``blobs/<sha>``, outside the snapshot, and resolving it first made every image "outside the root"."""
    if not isinstance(rel, str) or not rel.strip():
        raise SchemaError(file, index, fld, f"image path must be a non-empty string, got {rel!r}")
    norm = os.path.normpath(rel.replace("\\", "/"))
    if os.path.isabs(rel) or norm == os.pardir or norm.startswith(os.pardir + os.sep):
        raise SchemaError(file, index, fld, f"image path {rel!r} resolves outside the image root {Path(root)} "
                                            f"(record paths must be relative and stay below the root)")
    target = Path(root) / norm
    if check_exists and not target.is_file():
        what = "is a broken symlink" if target.is_symlink() else "does not exist"
        raise SchemaError(file, index, fld, f"image {what}: {target}")
    return target


# ------------------------------------------------------------------------------------------------
# reading


def _label_from_value(value: Any, *, file, index, fld, response: bool = False) -> str:
    """A label is exactly "Image A"/"Image B" or a bare ``<answer>Image X</answer>`` (what the released
    answer-only JSONL writes). With ``response=True`` (a training response) a full CoT whose one answer
    block ends it is also read. Anything else is an error: the official eval compares the label string
    exactly, so text that merely mentions an answer (an instruction, "<answer>Image A</answer> or
    <answer>Image B</answer>") must never become one."""
    if not isinstance(value, str):
        raise SchemaError(file, index, fld, f"label must be a string, got {type(value).__name__}")
    text = value.strip()
    if text in LABELS:
        return text
    bare = _ANSWER_BLOCK.fullmatch(text)
    if bare:
        return bare.group(1)
    if response:
        blocks = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
        if len(blocks) == 1 and text.endswith("</answer>") and blocks[0].strip() in LABELS:
            return blocks[0].strip()
    allowed = "'<answer>Image A</answer>' or a response ending with its only answer block" if response else "'<answer>Image A</answer>'"
    raise SchemaError(file, index, fld, f"label must be exactly 'Image A' or 'Image B' (or {allowed}), got {value[:80]!r}")


def _str_list(obj: dict, key: str, *, file, index, required: bool = True) -> list[str]:
    if key not in obj:
        if required:
            raise SchemaError(file, index, key, "missing key")
        return []
    value = obj[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(file, index, key, f"must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_REFS_STORED:
        raise SchemaError(file, index, key, f"{len(value)} references is more than the limit {MAX_REFS_STORED}")
    return list(value)


def _attributes(obj: dict, key: str, *, file, index, warnings: list[str]) -> dict[str, str] | None:
    """The canonical five-element profile, or None. A profile lacking an element is tolerated (the
    official eval never reads it) but dropped with a warning: a partial profile would score as wrong."""
    if obj.get(key) in (None, "", {}):
        return None
    try:
        return canonicalize_profile(obj[key])
    except ValueError as e:
        if "lacks element" in str(e):
            warnings.append(WARN_PARTIAL_PROFILE)
            log.debug("%s record %s field %r: %s (profile dropped)", file, index, key, e)
            return None
        raise SchemaError(file, index, key, str(e)) from None
    except (AttributeError, TypeError) as e:
        raise SchemaError(file, index, key, str(e)) from None


def record_from_dict(obj: Any, *, file=None, index: int | None = None, kind: str = "bench") -> PreferenceRecord:
    """Validate one official-schema object (``kind`` = ``bench`` or ``train``) into a PreferenceRecord."""
    if not isinstance(obj, dict):
        raise SchemaError(file, index, None, f"record must be a JSON object, got {type(obj).__name__}")
    for key in ("imageA", "imageB"):
        if key not in obj:
            raise SchemaError(file, index, key, "missing key")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise SchemaError(file, index, key, f"must be a non-empty string, got {obj[key]!r}")
    warnings: list[str] = []
    if obj["imageA"] == obj["imageB"]:  # the official script scores it (a coin flip for any model): count, not abort
        warnings.append(WARN_SAME_CANDIDATES)
    preferred = _str_list(obj, "prefered_images", file=file, index=index)
    non_preferred = _str_list(obj, "non_prefered_images", file=file, index=index)
    if not preferred or not non_preferred:  # the official prompt then leaves out the reference part
        warnings.append(WARN_EMPTY_REFS)
    convs = obj.get("conversations")
    if not isinstance(convs, list) or not convs or not all(isinstance(c, dict) and "value" in c for c in convs):
        raise SchemaError(file, index, "conversations", "must be a non-empty list of objects with a 'value'")
    instruction = response = None
    if kind == "bench":
        label = _label_from_value(convs[0]["value"], file=file, index=index, fld="conversations[0].value")
    elif kind == "train":
        if len(convs) < 2:
            raise SchemaError(file, index, "conversations", "training records need [instruction, response]")
        instruction, response = convs[0]["value"], convs[1]["value"]
        label = _label_from_value(response, file=file, index=index, fld="conversations[1].value", response=True)
    else:
        raise ValueError(f"kind must be 'bench' or 'train', got {kind!r}")
    rpl = obj.get("reference_prompt_list")
    if rpl is not None and (not isinstance(rpl, list) or not all(isinstance(p, str) for p in rpl)):
        raise SchemaError(file, index, "reference_prompt_list", "must be a list of strings")
    user_id = obj.get("user_id")
    return PreferenceRecord(
        image_a=obj["imageA"],
        image_b=obj["imageB"],
        preferred=preferred,
        non_preferred=non_preferred,
        label=label,
        user_id=None if user_id is None else str(user_id),
        prefer_attributes=_attributes(obj, "prefer_attributes", file=file, index=index, warnings=warnings),
        non_prefer_attributes=_attributes(obj, "non_prefer_attributes", file=file, index=index, warnings=warnings),
        reference_prompt_list=rpl,
        response=response,
        instruction=instruction,
        extra={k: v for k, v in obj.items() if k not in _KNOWN},
        warnings=warnings,
    )


def warning_counts(records: Iterable[PreferenceRecord]) -> dict[str, int]:
    """{warning code: number of records carrying it} (results.json's ``data_warnings``)."""
    return dict(sorted(Counter(w for r in records for w in dict.fromkeys(r.warnings)).items()))


def _log_warnings(path: Path, records: Sequence[PreferenceRecord]) -> None:
    counts = warning_counts(records)
    if counts:
        first = {code: [i for i, r in enumerate(records) if code in r.warnings][:5] for code in counts}
        log.warning("%s: tolerated as the official script does: %s", path,
                    "; ".join(f"{code} x{n} (records {', '.join(map(str, first[code]))}{', ...' if n > 5 else ''})" for code, n in counts.items()))


def check_images(rec: PreferenceRecord, image_root: str | os.PathLike, *, file=None, index: int | None = None) -> None:
    """Every image of ``rec`` exists under ``image_root`` (no escaping it)."""
    resolve_image(image_root, rec.image_a, file=file, index=index, fld="imageA")
    resolve_image(image_root, rec.image_b, file=file, index=index, fld="imageB")
    for i, p in enumerate(rec.preferred):
        resolve_image(image_root, p, file=file, index=index, fld=f"prefered_images[{i}]")
    for i, p in enumerate(rec.non_preferred):
        resolve_image(image_root, p, file=file, index=index, fld=f"non_prefered_images[{i}]")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise SchemaError(path, None, None, "file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SchemaError(path, None, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise SchemaError(path, None, None, f"not UTF-8 text: {e}") from None


def default_image_root(path: str | os.PathLike) -> Path:
    """Official layout: images sit in ``images/`` next to the JSON (``data/<SUBSET>/images``)."""
    path = Path(path)
    return path.parent / "images" if (path.parent / "images").is_dir() else path.parent


def load_bench(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *, validate_images: bool = True) -> list[PreferenceRecord]:
    """Load an official bench JSON list. ``image_root`` defaults to the ``images/`` folder beside it."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise SchemaError(path, None, None, f"top level must be a JSON list of records, got {type(data).__name__}")
    if len(data) > MAX_RECORDS:
        raise SchemaError(path, None, None, f"{len(data)} records exceeds the limit {MAX_RECORDS}")
    root = Path(image_root) if image_root is not None else default_image_root(path)
    out = []
    for i, obj in enumerate(data):
        rec = record_from_dict(obj, file=path, index=i, kind="bench")
        if validate_images:
            check_images(rec, root, file=path, index=i)
        out.append(rec)
    _log_warnings(path, out)
    return out


def load_train_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *, validate_images: bool = True) -> list[PreferenceRecord]:
    """Load an official training JSONL file (one record per non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(path, None, None, "file does not exist")
    root = Path(image_root) if image_root is not None else default_image_root(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(path, len(out), None, f"malformed JSON on line {i + 1}: {e.msg}") from None
            rec = record_from_dict(obj, file=path, index=len(out), kind="train")
            if validate_images:
                check_images(rec, root, file=path, index=len(out))
            out.append(rec)
            if len(out) > MAX_RECORDS:
                raise SchemaError(path, None, None, f"more than {MAX_RECORDS} records")
    _log_warnings(path, out)
    return out


# ------------------------------------------------------------------------------------------------
# writing


def record_to_dict(rec: PreferenceRecord, *, kind: str = "bench") -> dict[str, Any]:
    """Official field names. ``bench``: conversations[0] is the label. ``train``: [instruction, response]."""
    if rec.label not in LABELS:
        raise SchemaError(None, None, "label", f"must be 'Image A' or 'Image B', got {rec.label!r}")
    obj: dict[str, Any] = {}
    if rec.user_id is not None:
        obj["user_id"] = rec.user_id
    obj.update({"imageA": rec.image_a, "imageB": rec.image_b, "prefered_images": list(rec.preferred), "non_prefered_images": list(rec.non_preferred)})
    if rec.prefer_attributes is not None:
        obj["prefer_attributes"] = dict(rec.prefer_attributes)
    if rec.non_prefer_attributes is not None:
        obj["non_prefer_attributes"] = dict(rec.non_prefer_attributes)
    if rec.reference_prompt_list is not None:
        obj["reference_prompt_list"] = list(rec.reference_prompt_list)
    if kind == "bench":
        obj["conversations"] = [{"from": "gpt", "value": rec.label}]
    elif kind == "train":
        response = rec.response if rec.response is not None else f"<answer>{rec.label}</answer>"
        obj["conversations"] = [{"from": "human", "value": rec.instruction or ""}, {"from": "gpt", "value": response}]
    else:
        raise ValueError(f"kind must be 'bench' or 'train', got {kind!r}")
    for k, v in rec.extra.items():
        obj.setdefault(k, v)
    return obj


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_bench(records: Iterable[PreferenceRecord], path: str | os.PathLike) -> Path:
    """Write an official bench JSON list (atomically)."""
    path = Path(path)
    _atomic_write(path, json.dumps([record_to_dict(r, kind="bench") for r in records], ensure_ascii=False, indent=1))
    return path


def write_train_jsonl(records: Iterable[PreferenceRecord], path: str | os.PathLike) -> Path:
    """Write an official training JSONL file (atomically)."""
    path = Path(path)
    lines = [json.dumps(record_to_dict(r, kind="train"), ensure_ascii=False) for r in records]
    _atomic_write(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


def subset_paths(bench_root: str | os.PathLike, subsets: Sequence[str] | None = None) -> dict[str, Path]:
    """Official layout: ``<root>/data/<SUBSET>/<SUBSET>.json``. Without ``subsets``, every one present.
    A named subset that is absent raises SchemaError listing what is there."""
    root = Path(bench_root)
    data_dir = root / "data"
    if not data_dir.is_dir():
        raise SchemaError(root, None, None, "not a PreferImg-Bench root: no data/ folder (expected data/<SUBSET>/<SUBSET>.json)")
    present = {p.name: p / f"{p.name}.json" for p in sorted(data_dir.iterdir()) if (p / f"{p.name}.json").is_file()}
    if subsets is None:
        if not present:
            raise SchemaError(root, None, None, "no subsets found under data/")
        return present
    missing = [s for s in subsets if s not in present]
    if missing:
        raise SchemaError(root, None, None, f"subset(s) {missing} not found; present: {sorted(present)}")
    return {s: present[s] for s in subsets}
