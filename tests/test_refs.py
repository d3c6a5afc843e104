"""Variable reference counts in the training rows (data.refs_per_side, issue #27): the draw, its seeding,
its config forms and the rows build_examples makes with it."""

from __future__ import annotations

from collections import Counter

import pytest

from preferthinker.data.refs import RefDraw, draw_refs, parse_ref_draw, record_key

LIKED = [f"p{i}.png" for i in range(5)]
DISLIKED = [f"n{i}.png" for i in range(5)]


@pytest.mark.parametrize("value, counts, paired", [
    (None, None, None),
    (3, (3,), False),
    ([5, 1, 2, 2], (1, 2, 2, 5), False),   # a repeated count stays: it weighs the draw
    ({"min": 1, "max": 5}, (1, 2, 3, 4, 5), False),
    ({"min": 2, "max": 3, "paired": True}, (2, 3), True),
])
def test_config_forms(value, counts, paired):
    draw = parse_ref_draw(value)
    if counts is None:
        assert draw is None
    else:
        assert (draw.counts, draw.paired) == (counts, paired)


@pytest.mark.parametrize("value, words", [
    (0, "1..64"), ([], "no allowed"), ([1, "two"], "integers"), ({"min": 4, "max": 2}, "min=4 > max=2"),
    ({"min": 1, "most": 5}, "unknown keys"), ("five", "expected null"), (True, "expected null"), ({"min": 0, "max": 3}, "1..64"),
])
def test_bad_config_values_name_the_field(value, words):
    with pytest.raises(ValueError, match="data.refs_per_side") as e:
        parse_ref_draw(value)
    assert words in str(e.value)


def test_draw_is_seeded_by_record_content_and_covers_every_count():
    draw = RefDraw((1, 2, 3, 4, 5))
    seen_liked, seen_disliked, uneven = Counter(), Counter(), 0
    for r in range(300):
        key = record_key(f"a{r}.png", f"b{r}.png", LIKED, DISLIKED)
        liked, disliked = draw_refs(LIKED, DISLIKED, draw, seed=7, key=key, max_refs=5)
        # the same record, seed and key always give the same row (a resumed run sees the same data)
        assert (liked, disliked) == draw_refs(LIKED, DISLIKED, draw, seed=7, key=key, max_refs=5)
        assert liked == [p for p in LIKED if p in liked] and disliked == [p for p in DISLIKED if p in disliked]  # record order kept
        seen_liked[len(liked)] += 1
        seen_disliked[len(disliked)] += 1
        uneven += len(liked) != len(disliked)
    assert set(seen_liked) == set(seen_disliked) == {1, 2, 3, 4, 5}
    assert min(seen_liked.values()) > 30  # roughly uniform over 1..5 (60 expected each)
    assert uneven > 150  # independent sides: about 4 in 5 rows differ
    other = [draw_refs(LIKED, DISLIKED, draw, seed=8, key=record_key(f"a{r}.png", f"b{r}.png", LIKED, DISLIKED), max_refs=5)
             for r in range(50)]
    same = [draw_refs(LIKED, DISLIKED, draw, seed=7, key=record_key(f"a{r}.png", f"b{r}.png", LIKED, DISLIKED), max_refs=5)
            for r in range(50)]
    assert other != same  # the run's seed matters


def test_paired_draw_caps_and_short_records():
    for r in range(40):
        liked, disliked = draw_refs(LIKED, DISLIKED, RefDraw((2, 4), paired=True), seed=0, key=r, max_refs=5)
        assert len(liked) == len(disliked) in (2, 4)
    liked, disliked = draw_refs(LIKED, DISLIKED[:1], RefDraw((5,)), seed=0, key=1, max_refs=3)
    assert (len(liked), disliked) == (3, DISLIKED[:1])  # capped by prompt.max_refs, and by what the record holds
    assert draw_refs([], DISLIKED, RefDraw((2,)), seed=0, key=1, max_refs=5)[0] == []


def test_labelled_liked_groups_are_all_shown():
    """A multi-preference user likes images of two profiles; a drawn subset must show both, or the target names a
    term (and scores a candidate "preferred") that the row never shows."""
    groups = ["P1", "P2", "P1", "P2", "P1"]
    draw = RefDraw((1, 2, 3, 4, 5))
    counts, fixed = Counter(), 0
    for r in range(400):
        plain = draw_refs(LIKED, DISLIKED, draw, seed=5, key=r, max_refs=5)
        liked, disliked = draw_refs(LIKED, DISLIKED, draw, seed=5, key=r, max_refs=5, liked_groups=groups)
        shown = {groups[LIKED.index(p)] for p in liked}
        assert shown == {"P1", "P2"}, (r, liked)
        assert liked == [p for p in LIKED if p in liked]  # record order kept
        assert disliked == plain[1]  # the disliked side is the draw without labels
        covered = {groups[LIKED.index(p)] for p in plain[0]} == {"P1", "P2"}
        if covered:
            assert liked == plain[0]  # a subset that already shows both is left alone
        else:
            fixed += 1
            # one image swapped for the missing profile, or one added when the subset held a single image
            assert len(liked) == max(len(plain[0]), 2)
        counts[len(liked)] += 1
    assert fixed > 50 and set(counts) == {2, 3, 4, 5}  # a lone liked image cannot show two profiles: it becomes two
    # labels that are all one group change nothing; max_refs below the group count shows what fits
    assert draw_refs(LIKED, DISLIKED, draw, seed=5, key=3, max_refs=5, liked_groups=["P"] * 5) == \
        draw_refs(LIKED, DISLIKED, draw, seed=5, key=3, max_refs=5)
    assert len(draw_refs(LIKED, DISLIKED, RefDraw((1,)), seed=5, key=3, max_refs=1, liked_groups=groups)[0]) == 1
    with pytest.raises(ValueError, match="4 liked groups for 5 liked images"):
        draw_refs(LIKED, DISLIKED, draw, seed=5, key=3, max_refs=5, liked_groups=groups[:4])


def test_rows_show_the_drawn_subset_with_unchanged_targets(mini_data):
    from preferthinker.data.loading import PromptSpec, build_examples, shown_record
    from preferthinker.data.schema import load_train_jsonl

    path = mini_data / "train" / "sft.jsonl"
    root = mini_data / "train" / "images"
    recs = load_train_jsonl(path, root)[:8]
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)
    draw = RefDraw((1, 2, 3))
    full = build_examples(recs, root, spec, kind="sft")
    rows = build_examples(recs, root, spec, kind="sft", ref_draw=draw, seed=3)
    grpo = build_examples(recs, root, spec, kind="grpo", ref_draw=draw, seed=3)
    assert build_examples(recs, root, spec, kind="sft", ref_draw=draw, seed=3)[0]["prompt"] == rows[0]["prompt"]
    counts = set()
    for rec, row, f, g in zip(recs, rows, full, grpo, strict=True):
        shown = shown_record(rec, draw, spec, 3)
        n_refs = len(shown.preferred) + len(shown.non_preferred)
        counts.add((len(shown.preferred), len(shown.non_preferred)))
        assert len(row["images"]) == n_refs + 2 and len(f["images"]) == 3 + 3 + 2
        assert sum(1 for b in row["prompt"][-1]["content"] if b["type"] == "image") == n_refs + 2
        assert row["completion"] == f["completion"]  # the CoT target is the user's truth, whatever subset is shown
        # GRPO: the prompt shows the same subset; the reward columns keep the record's own references
        assert len(g["images"]) == n_refs + 2 and g["prefered_images"] == rec.preferred and g["solution"] == rec.label
        # per-element truth for the element_scores reward (synthetic records carry it)
        assert g["true_scores_a"] == rec.extra["true_scores_a"] and g["true_scores_b"] == rec.extra["true_scores_b"]
    assert len(counts) > 1


def test_config_defaults_and_bad_override_is_a_config_error():
    from tests.conftest import compose
    from preferthinker.runtime import ConfigError
    from preferthinker.train.common import ref_draw

    assert ref_draw(compose("sft", [])) == RefDraw((1, 2, 3, 4, 5))  # synthetic default: 1-5 per side
    assert ref_draw(compose("grpo", [])) == RefDraw((1, 2, 3, 4, 5))
    assert ref_draw(compose("sft", ["data=official", "data.root=x", "data.train_sft=x", "data.train_grpo=x"])) is None
    assert ref_draw(compose("sft", ["data.refs_per_side=[1,2,3,5]"])).counts == (1, 2, 3, 5)
    assert ref_draw(compose("sft", ["data.refs_per_side=2", "data.refs_paired=true"])) == RefDraw((2,), paired=True)
    assert ref_draw(compose("sft", ["data.refs_per_side=null"])) is None
    assert ref_draw(compose("sft", ["~data.refs_per_side", "+data.refs_per_side={min:2,max:3}"])).counts == (2, 3)
    with pytest.raises(ConfigError, match="data.refs_per_side"):
        ref_draw(compose("sft", ["data.refs_per_side=[0,3]"]))
    with pytest.raises(ConfigError, match="data.refs_paired"):
        ref_draw(compose("sft", ["data.refs_paired=maybe"]))
    assert ref_draw(compose("sft", [])).cover_profiles is False  # the blind draw (measured better, docs/results.md)
    assert ref_draw(compose("sft", ["data.refs_cover_profiles=true"])).cover_profiles is True
    with pytest.raises(ConfigError, match="data.refs_cover_profiles"):
        ref_draw(compose("sft", ["data.refs_cover_profiles=sometimes"]))


@pytest.mark.slow
def test_sft_recipe_trains_on_drawn_reference_counts(mini_data, tiny_model, tmp_path):
    """The SFT recipe with the per-record draw on (two steps): it builds its rows with the draw and trains."""
    from tests.conftest import compose, sft_overrides
    from preferthinker.train import sft

    seen: list = []
    real = sft.build_examples

    def spy(*args, **kwargs):
        seen.append(kwargs.get("ref_draw"))
        return real(*args, **kwargs)

    sft.build_examples = spy
    try:
        over = sft_overrides(mini_data, tiny_model, tmp_path / "run", **{"trainer.max_steps": 2, "trainer.save_strategy": "no",
                                                                            "data.refs_per_side": "[1,2]"})
        sft.run(compose("sft", over))
    finally:
        sft.build_examples = real
    assert seen and all(d == RefDraw((1, 2)) for d in seen)
    assert (tmp_path / "run" / "final" / "config.json").is_file()


@pytest.mark.slow
def test_grpo_recipe_trains_on_drawn_reference_counts(mini_data, tiny_model, tmp_path):
    """GRPO with prompts of different lengths in one batch (1-3 references per side): one step runs and logs rewards."""
    from tests.conftest import compose, train_overrides
    from preferthinker.train.grpo import run

    over = train_overrides(mini_data, tiny_model, tmp_path / "run", **{
        "trainer.max_steps": 1, "trainer.num_generations": 4, "trainer.per_device_train_batch_size": 4,
        "trainer.gradient_accumulation_steps": 1, "trainer.max_completion_length": 16, "trainer.save_strategy": "no",
        "reward.names": "[accuracy,format]", "reward.weights": "[1.0,0.3]", "data.refs_per_side": "[1,2,3]"})
    res = run(compose("grpo", over))
    assert res["global_step"] == 1 and (tmp_path / "run" / "final" / "config.json").is_file()


def test_a_repeated_count_weighs_its_draw():
    from preferthinker.data.refs import draw_refs, parse_ref_draw

    draw = parse_ref_draw([5, 1, 5, 5])
    assert draw.counts == (1, 5, 5, 5)   # kept, not deduplicated: 5 is drawn three times as often as 1
    paths = [f"r{i}" for i in range(5)]
    sizes = [len(draw_refs(paths, paths, draw, seed=0, key=k, max_refs=5)[0]) for k in range(2000)]
    assert set(sizes) == {1, 5} and 0.70 < sizes.count(5) / len(sizes) < 0.80
    assert parse_ref_draw([1, 2, 3, 4, 5]).counts == (1, 2, 3, 4, 5)   # the default draw is unchanged
