"""Simulated users: profiles, references, candidates and the label from a stated scoring rule.

* **Single-preference (SP)** user: a preference profile P and a non-preference profile N, one term per
  element, ``N[e] != P[e]`` for every element.
* **Multi-preference (MP)** user: two preference profiles P1, P2 that differ in every element, and one
  non-preference profile N different from both in every element. Their ``prefer_attributes`` join the
  two terms with ", " ("Cubism, Art Nouveau"): P1's term first (``term_order="drawn"``, the default), though
  nothing in the references (two or three of each profile, shuffled) says which profile was drawn first; or in
  alphabetical order (``"sorted"``), an order any reader of the references can write.
* **References**: ``num_refs`` liked images (SP: all rendered with P; MP: at least two with each of P1
  and P2, in a random order) and ``num_refs`` disliked images rendered with N, each with its own
  content seed.
* **Candidates** A and B: each element independently takes a preferred term (probability
  ``p_preferred``; for MP one of the two at random), the non-preferred term (``p_non_preferred``) or
  any other term of the vocabulary (the rest), each with its own content seed.
* **Scoring rule** (per element): a preferred term scores 5, the non-preferred term 1, any other term
  3; a candidate's total is the sum over the five elements. The label is the candidate with the larger
  total. Totals are always odd sums of five odd numbers, so they differ by at least 2 or tie; a tied
  pair is dropped and a new pair drawn.
* **Label balance**: users are paired (0,1), (2,3), ...; one of each pair gets the winner as Image A,
  the other as Image B (which one is drawn from the pair's own seed). A split of even size is exactly
  balanced, an odd one is off by one.

Hold-out rule (what the OD splits never share with training, see ``HeldOut``):

* a *profile* is held out when the sum of its five term indices (vocabulary order) is congruent to
  ``residue`` modulo ``modulus`` (default 0 mod 5: one profile in five). Every OD user's preference
  profile(s) are held-out profiles; no train or ID user has a held-out preference profile, and no
  train or ID image (reference, candidate) is rendered with a held-out term combination. Every single
  term, and every pair of terms across two elements, still occurs in training: only the full five-term
  combinations are new;
* *content seeds*: train and ID images draw content seeds from ``[0, 2**31)``, OD images from
  ``[2**32, 2**32 + 2**31)``, so no OD content seed occurs in training;
* *layouts*: the layout families in ``layouts`` (default ``ring``) are drawn only for OD images.

Everything about user ``i`` of split ``s`` is a pure function of ``(seed, s, i)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from preferthinker.profile import ELEMENTS
from preferthinker.data.synthetic.render import LAYOUTS
from preferthinker.data.synthetic.vocabulary import Vocabulary, load_vocabulary

SPLIT_CODES = {"train_sft": 1, "train_grpo": 2, "SP_ID": 3, "SP_OD": 4, "MP_ID": 5, "MP_OD": 6}
BENCH_SPLITS = ("SP_ID", "SP_OD", "MP_ID", "MP_OD")
TERM_ORDERS = ("drawn", "sorted")  # how an MP user's two liked terms per element are written (UserSettings.term_order)
TRAIN_SPLITS = ("train_sft", "train_grpo")
ID_SEED_RANGE = (0, 2**31)
OD_SEED_RANGE = (2**32, 2**32 + 2**31)
PREFERRED, NON_PREFERRED, OTHER = 5, 1, 3
MAX_TIE_DRAWS = 1000


@dataclass(frozen=True)
class HeldOut:
    modulus: int = 5
    residue: int = 0
    layouts: tuple[str, ...] = ("ring",)

    def __post_init__(self):
        if self.modulus < 2:
            raise ValueError(f"heldout.modulus must be >= 2, got {self.modulus}")
        if not 0 <= self.residue < self.modulus:
            raise ValueError(f"heldout.residue must be in [0, {self.modulus}), got {self.residue}")
        bad = [l for l in self.layouts if l not in LAYOUTS]
        if bad:
            raise ValueError(f"heldout.layouts {bad} are not layouts; known: {LAYOUTS}")
        if len(set(self.layouts)) >= len(LAYOUTS):
            raise ValueError("heldout.layouts may not hold out every layout")

    def profile_key(self, profile: Mapping[str, str], vocab: Vocabulary) -> int:
        return sum(vocab.index(e, profile[e]) for e in ELEMENTS) % self.modulus

    def is_heldout(self, profile: Mapping[str, str], vocab: Vocabulary) -> bool:
        return self.profile_key(profile, vocab) == self.residue

    def layouts_for(self, od: bool) -> tuple[str, ...]:
        return LAYOUTS if od else tuple(l for l in LAYOUTS if l not in self.layouts)

    def describe(self) -> str:
        return (
            f"OD preference profiles have sum(term indices) % {self.modulus} == {self.residue}; no train/ID "
            f"preference profile does, and no train/ID image is rendered with such a combination. OD content "
            f"seeds lie in [{OD_SEED_RANGE[0]}, {OD_SEED_RANGE[1]}), train/ID ones in [{ID_SEED_RANGE[0]}, "
            f"{ID_SEED_RANGE[1]}). Layout(s) {list(self.layouts)} are drawn only for OD images."
        )


@dataclass(frozen=True)
class UserSettings:
    num_refs: int = 5
    mp_fraction: float = 0.5  # share of MP users in the training splits
    p_preferred: float = 0.4
    p_non_preferred: float = 0.3
    heldout: HeldOut = field(default_factory=HeldOut)
    term_order: str = "drawn"  # an MP user's two liked terms per element: "drawn" (P1's first) | "sorted" (alphabetical)


@dataclass
class ImageSpec:
    content_seed: int
    profile: dict[str, str]
    name: str  # file name (relative to the split's image root)


@dataclass
class User:
    user_id: str
    split: str
    index: int
    kind: str  # "SP" | "MP"
    od: bool
    preferences: list[dict[str, str]]  # 1 (SP) or 2 (MP) profiles
    non_preference: dict[str, str]
    liked: list[ImageSpec]
    disliked: list[ImageSpec]
    image_a: ImageSpec
    image_b: ImageSpec
    scores_a: list[int]
    scores_b: list[int]
    label: str
    layouts: tuple[str, ...]
    tie_draws: int = 0
    term_order: str = "drawn"  # UserSettings.term_order

    @property
    def prefer_attributes(self) -> dict[str, str]:
        """The official form: one term, or two joined with ", " for MP users (in ``preferred_terms`` order)."""
        return {e: ", ".join(terms) for e, terms in self.preferred_terms.items()}

    @property
    def preferred_terms(self) -> dict[str, list[str]]:
        """Each element's liked terms: P1's then P2's (``term_order="drawn"``) or alphabetical (``"sorted"``)."""
        terms = {e: list(dict.fromkeys(p[e] for p in self.preferences)) for e in ELEMENTS}
        return {e: sorted(t, key=str.casefold) for e, t in terms.items()} if self.term_order == "sorted" else terms

    def images(self) -> list[ImageSpec]:
        return self.liked + self.disliked + [self.image_a, self.image_b]

    def to_dict(self) -> dict:
        return asdict(self)


def score_element(term: str, preferred: Sequence[str], non_preferred: str) -> int:
    """The stated rule: preferred 5, non-preferred 1, anything else 3."""
    if term in preferred:
        return PREFERRED
    if term == non_preferred:
        return NON_PREFERRED
    return OTHER


def score_profile(profile: Mapping[str, str], preferred: Mapping[str, Sequence[str]], non_preference: Mapping[str, str]) -> list[int]:
    return [score_element(profile[e], preferred[e], non_preference[e]) for e in ELEMENTS]


def user_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), int(stream)])


def _random_profile(rng: np.random.Generator, vocab: Vocabulary) -> dict[str, str]:
    return {e: vocab.names(e)[int(rng.integers(vocab.size(e)))] for e in ELEMENTS}


def _draw_preference(rng, vocab, heldout: HeldOut, od: bool, differ_from: Mapping[str, str] | None = None) -> dict[str, str]:
    for _ in range(10_000):
        if differ_from is None:
            p = _random_profile(rng, vocab)
        else:
            p = {}
            for e in ELEMENTS:
                choices = [t for t in vocab.names(e) if t != differ_from[e]]
                p[e] = choices[int(rng.integers(len(choices)))]
        if heldout.is_heldout(p, vocab) == od:
            return p
    raise RuntimeError("could not draw a profile satisfying the hold-out rule")  # pragma: no cover


def _draw_other(rng, vocab, avoid: Mapping[str, Sequence[str]], heldout: HeldOut, forbid_heldout: bool) -> dict[str, str]:
    for _ in range(10_000):
        p = {}
        for e in ELEMENTS:
            choices = [t for t in vocab.names(e) if t not in avoid[e]]
            p[e] = choices[int(rng.integers(len(choices)))]
        if not (forbid_heldout and heldout.is_heldout(p, vocab)):
            return p
    raise RuntimeError("could not draw a profile")  # pragma: no cover


def _content_seed(rng: np.random.Generator, od: bool) -> int:
    lo, hi = OD_SEED_RANGE if od else ID_SEED_RANGE
    return int(lo + rng.integers(0, hi - lo))


def _candidate(rng, vocab, pref_terms, non_pref, settings: UserSettings, forbid_heldout: bool) -> dict[str, str]:
    for _ in range(10_000):
        prof = {}
        for e in ELEMENTS:
            u = rng.random()
            if u < settings.p_preferred:
                opts = pref_terms[e]
                prof[e] = opts[int(rng.integers(len(opts)))]
            elif u < settings.p_preferred + settings.p_non_preferred:
                prof[e] = non_pref[e]
            else:
                others = [t for t in vocab.names(e) if t not in pref_terms[e] and t != non_pref[e]]
                prof[e] = others[int(rng.integers(len(others)))]
        if not (forbid_heldout and settings.heldout.is_heldout(prof, vocab)):
            return prof
    raise RuntimeError("could not draw a candidate")  # pragma: no cover


def winner_side(seed: int, split: str, index: int) -> str:
    """Balanced A/B: users 2k and 2k+1 get opposite sides; which one gets A comes from pair k's seed."""
    first = int(np.random.default_rng([int(seed), SPLIT_CODES[split], int(index) // 2, 99]).integers(2))
    side = first if index % 2 == 0 else 1 - first
    return "Image A" if side == 0 else "Image B"


def split_is_od(split: str) -> bool:
    return split.endswith("_OD")


def split_kind(split: str, rng: np.random.Generator, mp_fraction: float) -> str:
    if split.startswith("SP_"):
        return "SP"
    if split.startswith("MP_"):
        return "MP"
    return "MP" if rng.random() < mp_fraction else "SP"


def make_user(seed: int, split: str, index: int, settings: UserSettings = UserSettings(), vocab: Vocabulary | None = None) -> User:
    """Draw user ``index`` of ``split``. Deterministic in (seed, split, index, settings, vocabulary)."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLIT_CODES)}")
    vocab = vocab or load_vocabulary()
    rng = user_rng(seed, split, index)
    od = split_is_od(split)
    kind = split_kind(split, rng, settings.mp_fraction)
    ho = settings.heldout
    p1 = _draw_preference(rng, vocab, ho, od)
    prefs = [p1] if kind == "SP" else [p1, _draw_preference(rng, vocab, ho, od, differ_from=p1)]
    pref_terms = {e: list(dict.fromkeys(p[e] for p in prefs)) for e in ELEMENTS}
    # the non-preference profile: a different term per element (in-domain users: never a held-out combination)
    non_pref = _draw_other(rng, vocab, pref_terms, ho, forbid_heldout=not od)
    user_id = f"{split.lower()}_{index:06d}"
    layouts = ho.layouts_for(od)
    n = settings.num_refs
    if kind == "SP":
        which = [0] * n
    else:
        k1 = int(rng.integers(2, max(3, n - 1)))  # at least two refs of each profile when n >= 4
        k1 = min(max(k1, 1), n - 1)
        which = list(rng.permutation([0] * k1 + [1] * (n - k1)))
    liked = [ImageSpec(_content_seed(rng, od), dict(prefs[w]), f"{user_id}_p{i}.png") for i, w in enumerate(which)]
    disliked = [ImageSpec(_content_seed(rng, od), dict(non_pref), f"{user_id}_n{i}.png") for i in range(n)]
    draws = 0
    while True:
        draws += 1
        ca = _candidate(rng, vocab, pref_terms, non_pref, settings, forbid_heldout=not od)
        cb = _candidate(rng, vocab, pref_terms, non_pref, settings, forbid_heldout=not od)
        sa, sb = score_profile(ca, pref_terms, non_pref), score_profile(cb, pref_terms, non_pref)
        if sum(sa) != sum(sb):
            break
        if draws >= MAX_TIE_DRAWS:  # pragma: no cover - probability ~0
            raise RuntimeError("could not draw an untied candidate pair")
    if sum(sa) < sum(sb):  # put the winner first, then place it on the balanced side
        ca, cb, sa, sb = cb, ca, sb, sa
    label = winner_side(seed, split, index)
    if label == "Image B":
        ca, cb, sa, sb = cb, ca, sb, sa
    sa_seed, sb_seed = _content_seed(rng, od), _content_seed(rng, od)
    return User(
        user_id=user_id,
        split=split,
        index=index,
        kind=kind,
        od=od,
        preferences=[dict(p) for p in prefs],
        non_preference=dict(non_pref),
        liked=liked,
        disliked=disliked,
        image_a=ImageSpec(sa_seed, ca, f"{user_id}_A.png"),
        image_b=ImageSpec(sb_seed, cb, f"{user_id}_B.png"),
        scores_a=sa,
        scores_b=sb,
        label=label,
        layouts=layouts,
        tie_draws=draws - 1,
        term_order=settings.term_order,
    )
