"""The synthetic data engine: vocabulary, renderer, users, teacher, splits, baseline (fast, CPU)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from preferthinker.profile import ELEMENTS, split_terms
from preferthinker.response import parse_response
from preferthinker.data.schema import load_bench, load_train_jsonl, write_bench, write_train_jsonl
from preferthinker.data.synthetic import baseline as B
from preferthinker.data.synthetic.features import measure
from preferthinker.data.synthetic.render import LAYOUTS, make_content, random_profile, render_array
from preferthinker.data.synthetic.splits import DataConfigError, make_dataset, validate_config
from preferthinker.data.synthetic.teacher import passes_filter, teach
from preferthinker.data.synthetic.users import BENCH_SPLITS, HeldOut, UserSettings, make_user, winner_side
from preferthinker.data.synthetic.vocabulary import MIN_TERMS, VocabularyError, load_vocabulary, parse_vocabulary

REPO = Path(__file__).resolve().parents[1]
TINY = {"train_sft": 12, "train_grpo": 4, "SP_ID": 6, "SP_OD": 6, "MP_ID": 6, "MP_OD": 6}


def _cfg(out, **kw):
    cfg = {"out_dir": str(out), "seed": 3, "image_size": 56, "users": dict(TINY), "workers": 1, "progress": False, "contact_rows": 3}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "d"
    stats = make_dataset(_cfg(out, verbosity="normal"))
    return out, stats


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# vocabulary and renderer


def test_vocabulary_rules():
    vocab = load_vocabulary()
    for e in ELEMENTS:
        names = vocab.names(e)
        assert len(names) >= MIN_TERMS
        assert all(split_terms(n) == [n] for n in names)  # safe to join two with ", "
    bad = vocab.source.replace("- {name: Teal, hue: 178}", "- {name: Teal and Blue, hue: 178}")
    with pytest.raises(VocabularyError, match="and"):
        parse_vocabulary(bad)


def test_render_is_deterministic_and_content_independent_of_taste():
    vocab = load_vocabulary()
    rng = np.random.default_rng(0)
    p, q = random_profile(rng, vocab), random_profile(rng, vocab)
    a1, a2 = render_array(123, p, 56), render_array(123, p, 56)
    assert a1.dtype == np.uint8 and a1.shape == (56, 56, 3)
    assert np.array_equal(a1, a2)
    assert not np.array_equal(a1, render_array(124, p, 56))
    assert not np.array_equal(a1, render_array(123, q, 56))
    assert make_content(123).layout == make_content(123).layout
    assert render_array(7, p, 224).shape == (224, 224, 3)
    with pytest.raises(ValueError, match="size"):
        render_array(1, p, 20)
    with pytest.raises(ValueError, match="vocabulary"):
        render_array(1, dict(p, Color="Not A Colour"), 56)


def test_medium_style_detail_never_move_hue_or_saturation():
    """Independence in pixel space: the measured hue and saturation follow only Color and Saturation."""
    vocab = load_vocabulary()
    rng = np.random.default_rng(1)
    for i in range(60):
        p = random_profile(rng, vocab)
        m = measure(render_array(1000 + i, p, 56))
        hue = float(vocab.term("Color", p["Color"])["hue"])
        assert abs((m["hue"] - hue + 180) % 360 - 180) < 8, (p, m["hue"])
        assert abs(m["saturation"] - float(vocab.term("Saturation", p["Saturation"])["saturation"])) < 0.05, (p, m["saturation"])


def test_every_element_recoverable_from_pixels():
    """The baseline's per-image reading of each element is far above chance on fresh renders."""
    vocab = load_vocabulary()
    cal = B.calibrate(56, n=720, seed=1)
    rng = np.random.default_rng(2)
    hits = {e: 0 for e in ELEMENTS}
    n = 240
    for i in range(n):
        p = random_profile(rng, vocab)
        read = B.predict_terms(render_array(int(rng.integers(1 << 30)), p, 56), cal)
        for e in ELEMENTS:
            hits[e] += read[e] == p[e]
    acc = {e: hits[e] / n for e in ELEMENTS}
    for e in ELEMENTS:
        chance = 1 / vocab.size(e)
        assert acc[e] >= max(0.6, 3 * chance), acc


# ------------------------------------------------------------------------------------------------
# users and teacher


def test_users_scoring_rule_balance_and_holdout():
    vocab = load_vocabulary()
    ho = HeldOut()
    labels = []
    for i in range(60):
        u = make_user(0, "MP_OD" if i % 2 else "SP_ID", i, UserSettings(), vocab)
        assert u.label == winner_side(0, u.split, i)
        labels.append(u.label)
        prefs = u.preferred_terms
        for prof, scores in ((u.image_a.profile, u.scores_a), (u.image_b.profile, u.scores_b)):
            for j, e in enumerate(ELEMENTS):
                expect = 5 if prof[e] in prefs[e] else 1 if prof[e] == u.non_preference[e] else 3
                assert scores[j] == expect
        assert sum(u.scores_a) != sum(u.scores_b)
        assert (sum(u.scores_a) > sum(u.scores_b)) == (u.label == "Image A")
        for e in ELEMENTS:
            assert u.non_preference[e] not in prefs[e]
        if u.kind == "MP":
            assert len(u.preferences) == 2 and all(u.preferences[0][e] != u.preferences[1][e] for e in ELEMENTS)
            assert {tuple(sorted(s.profile.items())) for s in u.liked} == {tuple(sorted(p.items())) for p in u.preferences}
        assert all(ho.is_heldout(p, vocab) == u.od for p in u.preferences)
    # mp_term_order=sorted: each element's two liked terms in alphabetical order, not in the order the profiles were
    # drawn (which the shuffled references do not show); the user, the scores and the label are the same
    flipped = 0
    for i in range(1, 40, 2):
        drawn, srt = make_user(0, "MP_OD", i, UserSettings(), vocab), make_user(0, "MP_OD", i, UserSettings(term_order="sorted"), vocab)
        assert (srt.preferences, srt.scores_a, srt.scores_b, srt.label) == (drawn.preferences, drawn.scores_a, drawn.scores_b, drawn.label)
        assert all(srt.preferred_terms[e] == sorted(drawn.preferred_terms[e], key=str.casefold) for e in ELEMENTS)
        assert all(srt.prefer_attributes[e] == ", ".join(srt.preferred_terms[e]) for e in ELEMENTS)
        flipped += srt.prefer_attributes != drawn.prefer_attributes
    assert flipped > 0
    # exact balance over consecutive pairs of the same split
    sp = [make_user(0, "SP_ID", i).label for i in range(40)]
    assert sp.count("Image A") == sp.count("Image B") == 20


def test_teacher_renders_contract_and_filter():
    u = make_user(5, "train_sft", 0)
    a, b = render_array(u.image_a.content_seed, u.image_a.profile), render_array(u.image_b.content_seed, u.image_b.profile)
    for verbosity in ("terse", "normal", "rich"):
        resp = teach(u.prefer_attributes, u.non_preference, u.image_a.profile, u.image_b.profile, u.scores_a, u.scores_b,
                     measure(a), measure(b), verbosity=verbosity, rng=np.random.default_rng(0))
        parsed = parse_response(resp)
        assert parsed.format_ok and parsed.consistent and parsed.answer == u.label
        assert parsed.scores_a == u.scores_a and parsed.scores_b == u.scores_b
        assert passes_filter(resp, u.label, u.prefer_attributes, u.non_preference)
        if verbosity != "terse":
            assert "dominant hue" in parsed.rationales_a[1] and any(ch.isdigit() for ch in parsed.rationales_a[1])
    other = "Image B" if u.label == "Image A" else "Image A"
    flipped = resp.replace(f"<answer>{u.label}</answer>", f"<answer>{other}</answer>")
    assert not passes_filter(flipped, u.label, u.prefer_attributes, u.non_preference)  # reasoning contradicts answer
    assert not passes_filter(resp, other, u.prefer_attributes, u.non_preference)  # answer contradicts label


@pytest.mark.parametrize("index", [3, 6])  # a single- and a multi-preference user
@pytest.mark.parametrize("mode", ["terms", "relations", "sections", "checks", "none"])
def test_teacher_candidate_preamble_modes(mode, index):
    """The describe-first preamble: terms only, terms tagged with their relation to the profiles, or none;
    every mode keeps the contract, the scores and the answer, and a relation tag always agrees with its score."""
    import re

    u = make_user(7, "train_sft", index)
    resp = teach(u.prefer_attributes, u.non_preference, u.image_a.profile, u.image_b.profile, u.scores_a, u.scores_b,
                 None, None, verbosity="terse", describe_candidates=mode)
    parsed = parse_response(resp)
    assert parsed.format_ok and parsed.answer == u.label and parsed.scores_a == u.scores_a and parsed.scores_b == u.scores_b
    lines = [l for l in resp.splitlines() if l.startswith("Image A shows:") or l.startswith("Image B shows:")]
    assert len(lines) == (2 if mode in ("terms", "relations") else 0)
    if mode == "sections":  # one note per section, right under its heading, naming both profiles and both candidates
        notes = re.findall(r"^\d\. [^\n]+:\n(liked [^\n]+)\nImage A\(", resp, re.M)
        assert notes == [f"liked {u.prefer_attributes[e]}; disliked {u.non_preference[e]}; A shows {u.image_a.profile[e]}; "
                         f"B shows {u.image_b.profile[e]}." for e in ELEMENTS]
    if mode == "checks":  # per candidate: its term, then each profile term with yes/no; the yes/no agree with the scores
        notes = re.findall(r"^\d\. [^\n]+:\n(A shows [^\n]+)\nImage A\(", resp, re.M)
        assert len(notes) == len(ELEMENTS)
        word = {5: "preferred", 3: "neutral", 1: "non-preferred"}
        for e, note, sa, sb in zip(ELEMENTS, notes, u.scores_a, u.scores_b, strict=True):
            halves = re.fullmatch(r"A shows ([^;]+); liked ([^;]+); disliked ([^;]+) (yes|no)\. "
                                  r"B shows ([^;]+); liked ([^;]+); disliked ([^;]+) (yes|no)\.", note)
            assert halves, note
            for term, liked, disliked, dis_yes, score in ((*halves.group(1, 2, 3, 4), sa), (*halves.group(5, 6, 7, 8), sb)):
                assert disliked == u.non_preference[e]
                pairs = [p.rsplit(" ", 1) for p in liked.split(", ")]
                assert [t for t, _ in pairs] == [t.strip() for t in u.prefer_attributes[e].split(",")]
                assert [yn == "yes" for _, yn in pairs] == [t == term for t, _ in pairs]
                assert (dis_yes == "yes") == (disliked == term)
                relation = "preferred" if any(yn == "yes" for _, yn in pairs) else "non-preferred" if dis_yes == "yes" else "neutral"
                assert relation == word[score]
            assert (halves.group(1), halves.group(5)) == (u.image_a.profile[e], u.image_b.profile[e])
    from preferthinker.data.loading import section_chunks

    chunks = section_chunks(resp)  # the check-drill rows: note + two score lines per element, when notes exist
    assert len(chunks) == (len(ELEMENTS) if mode in ("checks", "sections") else 0)
    assert all(c.count("\n") == 2 and re.match(r"(A shows|liked) ", c) and re.search(r"\nImage B\(\d\)[^\n]*$", c) for c in chunks)
    if mode == "relations":
        word = {5: "preferred", 3: "neutral", 1: "non-preferred"}
        for line, prof, scores in zip(lines, (u.image_a.profile, u.image_b.profile), (u.scores_a, u.scores_b), strict=True):
            tags = re.findall(r"([^,:]+?) \(([a-z-]+)\)", line)
            assert [t.strip() for t, _ in tags] == [prof[e] for e in ELEMENTS]
            assert [w for _, w in tags] == [word[s] for s in scores]
    with pytest.raises(ValueError, match="describe_candidates"):
        teach(u.prefer_attributes, u.non_preference, u.image_a.profile, u.image_b.profile, u.scores_a, u.scores_b,
              None, None, describe_candidates="sometimes")


def test_check_drill_sections_draw_candidates_uniformly_and_score_them_by_the_rule():
    """Drill rows: candidates drawn from the element's terms independently of the profile (no "the liked term is
    the candidate's" shortcut to learn), notes in the checks format, scores by the stated rule."""
    import re
    from collections import Counter

    import numpy as np

    from preferthinker.data.synthetic.teacher import check_drill_section
    from preferthinker.data.synthetic.users import score_element
    from preferthinker.data.synthetic.vocabulary import load_vocabulary

    names = load_vocabulary().names("Color")
    rng = np.random.default_rng(0)
    drawn = Counter()
    for _ in range(600):
        body = check_drill_section("Color", [names[0], names[1]], names[2], names, rng)
        m = re.fullmatch(r"A shows ([^;]+); liked (.+?); disliked ([^;]+) (yes|no)\. B shows ([^;]+); liked (.+?); disliked ([^;]+) (yes|no)\.\n"
                         r"Image A\((\d)\) - ([^,]+), [a-z-]+;\nImage B\((\d)\) - ([^,]+), [a-z-]+\.", body)
        assert m, body
        ta, tb = m.group(1), m.group(5)
        assert m.group(2) == f"{names[0]} {'yes' if ta == names[0] else 'no'}, {names[1]} {'yes' if ta == names[1] else 'no'}"
        assert (m.group(4) == "yes") == (ta == names[2]) and (m.group(8) == "yes") == (tb == names[2])
        assert (int(m.group(9)), int(m.group(11))) == (score_element(ta, names[:2], names[2]), score_element(tb, names[:2], names[2]))
        assert (m.group(10), m.group(12)) == (ta, tb)
        drawn.update([ta, tb])
    assert set(drawn) == set(names) and max(drawn.values()) < 2 * min(drawn.values())  # uniform over the vocabulary


def test_candidate_reading_rows_name_each_candidates_terms_in_the_whole_prompt(dataset):
    """Reading rows: the record's 12 images in the official order, the final instruction replaced, and the target
    naming both candidates' true terms under each element heading; per_record=2 adds the swapped row (images and
    terms); records without per-candidate truth give none; per_record outside 0..2 is refused."""
    import dataclasses
    import re

    from preferthinker.data.loading import READ_INSTRUCTION, PromptSpec, build_read_examples, image_root_for, sample_inputs
    from preferthinker.profile import THINK_HEADINGS

    out, _ = dataset
    root = image_root_for(out / "train" / "sft.jsonl", None)
    recs = load_train_jsonl(out / "train" / "sft.jsonl", root)[:3]
    spec = PromptSpec(style="compact", system="compact", min_pixels=56 * 56, max_pixels=56 * 56)
    rows = build_read_examples(recs, root, spec, per_record=2)
    assert len(rows) == 6
    for rec, (row, swapped) in zip(recs, zip(rows[::2], rows[1::2], strict=True), strict=True):
        _, images = sample_inputs(rec, root, spec)
        texts = [c["text"] for c in row["prompt"][-1]["content"] if c["type"] == "text"]
        assert texts[-1] == READ_INSTRUCTION and texts[-3:-1] == ["Image A", "Image B"]
        assert [im.tobytes() for im in row["images"]] == [im.tobytes() for im in images]
        assert [im.tobytes() for im in swapped["images"]] == [im.tobytes() for im in images[:-2] + images[-1:] + images[-2:-1]]
        for r, (pa, pb) in ((row, (rec.extra["true_profile_a"], rec.extra["true_profile_b"])),
                            (swapped, (rec.extra["true_profile_b"], rec.extra["true_profile_a"]))):
            target = r["completion"][0]["content"][0]["text"]
            found = re.findall(r"^\d\. ([^:\n]+):\nA shows ([^.]+)\. B shows ([^.]+)\.$", target, re.M)
            assert found == [(h, pa[e], pb[e]) for h, e in zip(THINK_HEADINGS, ELEMENTS, strict=True)]
    assert len(build_read_examples(recs, root, spec, per_record=1)) == 3
    bare = [dataclasses.replace(r, extra={}) for r in recs]
    assert build_read_examples(bare, root, spec) == []
    with pytest.raises(ValueError, match="per_record"):
        build_read_examples(recs, root, spec, per_record=3)


# ------------------------------------------------------------------------------------------------
# the dataset


def test_mp_rows_show_both_liked_profiles(dataset):
    """data.refs_cover_profiles=true on synthetic MP records: every drawn subset holds a liked image of each profile the
    record's target names (the default blind draw hides one in some rows); a record whose reference_profiles do not
    match its liked images is refused by name."""
    import dataclasses

    from preferthinker.data.loading import PromptSpec, liked_profile_groups, shown_record
    from preferthinker.data.schema import load_train_jsonl

    from preferthinker.data.refs import RefDraw

    root = dataset[0] / "train" / "images"
    recs = load_train_jsonl(dataset[0] / "train" / "sft.jsonl", root)
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)
    mp = [r for r in recs if len(set(liked_profile_groups(r))) > 1]
    assert mp, "the synthetic training split holds multi-preference users"
    hidden = 0
    for seed in range(20):
        for rec in mp:
            groups = dict(zip(rec.preferred, liked_profile_groups(rec), strict=True))
            shown = shown_record(rec, RefDraw((1, 2, 3, 4, 5), cover_profiles=True), spec, seed)
            assert len({groups[p] for p in shown.preferred}) == 2
            blind = shown_record(rec, RefDraw((1, 2, 3, 4, 5)), spec, seed)
            hidden += len({groups[p] for p in blind.preferred}) < 2  # data.refs_cover_profiles=false (default): the blind draw
    assert hidden > 0
    bad = dataclasses.replace(mp[0], extra={**mp[0].extra, "reference_profiles": {"preferred": mp[0].extra["reference_profiles"]["preferred"][:1]}})
    with pytest.raises(ValueError, match=r"reference_profiles.preferred holds 1 entries for \d+ prefered_images"):
        shown_record(bad, RefDraw((2,), cover_profiles=True), spec, 0)


def test_layout_and_round_trip_through_official_loaders(dataset, tmp_path):
    out, stats = dataset
    for split in BENCH_SPLITS:
        path = out / "data" / split / f"{split}.json"
        recs = load_bench(path)  # official layout: images/ beside the JSON
        assert len(recs) == TINY[split]
        assert all(r.extra["true_scores_a"] and r.extra["true_profile_b"] for r in recs)
        again = write_bench(recs, tmp_path / f"{split}.json")
        assert again.read_bytes() == path.read_bytes()
        assert (out / f"contact_{split}.png").is_file()
    sft = load_train_jsonl(out / "train" / "sft.jsonl")
    grpo = load_train_jsonl(out / "train" / "grpo.jsonl")
    assert len(sft) == TINY["train_sft"] and len(grpo) == TINY["train_grpo"]
    assert write_train_jsonl(sft, tmp_path / "sft.jsonl").read_bytes() == (out / "train" / "sft.jsonl").read_bytes()
    from preferthinker.prompting import FINAL_INSTRUCTION

    for r in sft:
        assert r.instruction == FINAL_INSTRUCTION
        a = parse_response(r.response)
        assert a.format_ok and a.consistent and a.answer == r.label
        assert a.preference == r.prefer_attributes and a.non_preference == r.non_prefer_attributes
    assert all(r.response == f"<answer>{r.label}</answer>" for r in grpo)
    mp = [r for r in sft if r.extra["user_type"] == "MP"]
    assert all(len(split_terms(r.prefer_attributes["Color"])) == 2 for r in mp)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "heldout_rule" in manifest and manifest["seed"] == 3 and "workers" not in manifest["config"]
    assert (out / "vocabulary.yaml").read_text() == load_vocabulary().source


@pytest.mark.slow
def test_same_bytes_for_same_seed_any_workers(dataset, tmp_path):
    out, _ = dataset
    out2 = tmp_path / "again"
    make_dataset(_cfg(out2, verbosity="normal", workers=2))
    assert _tree_digest(out) == _tree_digest(out2)
    out3 = tmp_path / "other_seed"
    make_dataset(_cfg(out3, verbosity="normal", seed=4, contact_sheets=False))
    assert (out3 / "data/SP_ID/SP_ID.json").read_bytes() != (out / "data/SP_ID/SP_ID.json").read_bytes()


def test_label_balance(dataset):
    out, stats = dataset
    for split in list(BENCH_SPLITS) + ["train_sft", "train_grpo"]:
        labels = stats[split]["labels"]
        assert abs(labels["Image A"] - labels["Image B"]) <= 1, (split, labels)


def test_no_leakage_between_train_and_od(dataset):
    out, stats = dataset
    vocab = load_vocabulary()
    ho = HeldOut()

    def records(split):
        if split.startswith("train"):
            return load_train_jsonl(out / "train" / ("sft.jsonl" if split == "train_sft" else "grpo.jsonl"))
        return load_bench(out / "data" / split / f"{split}.json")

    def image_profiles(r):
        return r.extra["preference_profiles"] + [r.non_prefer_attributes, r.extra["true_profile_a"], r.extra["true_profile_b"]] + r.extra["reference_profiles"]["preferred"]

    def seeds(r):
        c = r.extra["content_seeds"]
        return set(c["preferred"]) | set(c["non_preferred"]) | {c["A"], c["B"]}

    train_seeds, train_hashes = set(), set()
    for split in ("train_sft", "train_grpo", "SP_ID", "MP_ID"):
        for r in records(split):
            assert not any(ho.is_heldout(p, vocab) for p in image_profiles(r)), (split, r.user_id)
            if split.startswith("train"):
                train_seeds |= seeds(r)
                for rel in r.preferred + r.non_preferred + [r.image_a, r.image_b]:
                    train_hashes.add(hashlib.sha256((out / "train" / "images" / rel).read_bytes()).digest())
        assert "ring" not in stats[split]["layouts"]
    for split in ("SP_OD", "MP_OD"):
        for r in records(split):
            assert all(ho.is_heldout(p, vocab) for p in r.extra["preference_profiles"])
            assert not seeds(r) & train_seeds
            for rel in r.preferred + r.non_preferred + [r.image_a, r.image_b]:
                assert hashlib.sha256((out / "data" / split / "images" / rel).read_bytes()).digest() not in train_hashes
    assert set(stats["SP_OD"]["layouts"]) | set(stats["MP_OD"]["layouts"]) <= set(LAYOUTS)


def test_baseline_predict_on_bench(dataset):
    out, _ = dataset
    B._CACHE[56] = B.calibrate(56, n=720, seed=1)
    recs = load_bench(out / "data" / "SP_ID" / "SP_ID.json")
    pred = B.baseline_predict(recs[0], out / "data" / "SP_ID" / "images")
    assert pred["answer"] in ("Image A", "Image B")
    assert set(pred["preference"]) == set(ELEMENTS) and set(pred["non_preference"]) == set(ELEMENTS)
    res = B.evaluate_records(recs, out / "data" / "SP_ID" / "images")
    assert res["n"] == len(recs) and 0.0 <= res["accuracy"] <= 1.0
    assert set(res["candidate_element_acc"]) == set(ELEMENTS)


# ------------------------------------------------------------------------------------------------
# config and entry point


@pytest.mark.parametrize(
    "override, match",
    [
        ({"image_size": 20}, "image_size"),
        ({"image_size": 60}, "multiple of 28"),
        ({"users": {"SP_ID": 0}}, "users.SP_ID"),
        ({"users": {"train_sft": -1}}, "users.train_sft"),
        ({"users": {"nope": 3}}, "unknown split"),
        ({"verbosity": "chatty"}, "verbosity"),
        ({"num_refs": 1}, "num_refs"),
        ({"workers": -2}, "workers"),
        ({"candidates": {"p_preferred": 0.8, "p_non_preferred": 0.4}}, "candidates"),
        ({"heldout": {"layouts": ["moon"]}}, "layouts"),
        ({"mp_term_order": "random"}, "mp_term_order"),
    ],
)
def test_config_validation(tmp_path, override, match):
    cfg = _cfg(tmp_path)
    if "users" in override:
        cfg["users"] = {**TINY, **override.pop("users")}
    cfg.update(override)
    with pytest.raises(DataConfigError, match=match):
        validate_config(cfg)


@pytest.mark.slow
def test_hydra_entry_point(tmp_path):
    out = tmp_path / "h"
    args = [sys.executable, str(REPO / "scripts" / "make_data.py"), f"out_dir={out}", f"run_dir={tmp_path / 'run'}", "progress=false",
            "contact_sheets=false", "workers=1", "users.train_sft=2", "users.train_grpo=2", "users.SP_ID=2", "users.SP_OD=2", "users.MP_ID=2", "users.MP_OD=2"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "data" / "MP_OD" / "MP_OD.json").is_file() and (out / "train" / "sft.jsonl").is_file()
    bad = subprocess.run(args[:2] + [f"out_dir={out}", f"run_dir={tmp_path / 'run2'}", "image_size=20"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "image_size" in bad.stderr
