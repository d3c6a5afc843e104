"""The Assessor API: checkpoint settings, inputs and their errors, assess / profile / rank, and the
consistency of rank with assess. Real-model tests use the untrained tiny model (greedy decoding is
deterministic) and assert what holds whatever it writes (fields = the parse of the raw text, notes for
unreadable answers); post-processing and the ranking arithmetic are checked with a scripted generator
that writes chosen (well-formed or malformed) responses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from preferthinker.assess import AssessInputError, Assessor, Comparison, Verdict, read_prompt_settings, rank_from_comparisons
from preferthinker.prompting import ImageLoadError
from preferthinker.response import Assessment, parse_response, render_response
from preferthinker.retry import RetryPolicy, in_given_names
from tests.conftest import compose, sft_overrides

MAX_NEW = 12  # tokens per response in real-model tests: enough to compare texts, cheap on CPU


def make_checkpoint(tiny_model: Path, dest: Path, **prompt) -> Path:
    """A run folder <dest>/final holding the tiny model and a preferthinker.json (compact prompt)."""
    final = dest / "final"
    if not final.exists():
        shutil.copytree(tiny_model, final)
    record = {"prompt": {"style": "compact", "system": "compact", "max_refs": 2, **prompt}, "min_pixels": 3136,
              "max_pixels": 3136, "stage": "sft"}
    (final / "preferthinker.json").write_text(json.dumps(record))
    return final


def solid(rgb, size=(56, 56)) -> Image.Image:
    return Image.new("RGB", size, tuple(rgb))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model) -> Path:
    return make_checkpoint(tiny_model, tmp_path_factory.mktemp("assess_run"))


@pytest.fixture(scope="module")
def assessor(ckpt) -> Assessor:
    return Assessor.from_pretrained(ckpt, device="cpu", max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def user(mini_data) -> dict:
    d = mini_data / "data" / "SP_ID" / "images"
    return {"liked": [d / f"SP_ID0_p{k}.png" for k in range(3)], "disliked": [d / f"SP_ID0_n{k}.png" for k in range(3)],
            "good": d / "SP_ID0_good.png", "bad": d / "SP_ID0_bad.png", "other": d / "SP_ID1_good.png", "dir": d}


# --------------------------------------------------------------------------------------------------
# settings recorded with a checkpoint


def test_save_final_writes_prompt_settings(tmp_path, mini_data, tiny_model):
    from preferthinker.train.common import save_final

    class StubTrainer:
        def save_model(self, out):
            Path(out).mkdir(parents=True, exist_ok=True)

    processor = SimpleNamespace(save_pretrained=lambda out: Path(out, "processor_config.json").write_text("{}"))
    cfg = compose("sft", sft_overrides(mini_data, tiny_model, tmp_path, **{"prompt.max_refs": 3}))
    final = save_final(StubTrainer(), processor, cfg, tmp_path)
    rec = json.loads((final / "preferthinker.json").read_text())
    assert rec == {"prompt": {"style": "compact", "system": "compact", "max_refs": 3}, "min_pixels": 3136, "max_pixels": 3136, "stage": "sft"}
    found = read_prompt_settings(final)
    assert found["style"] == "compact" and found["max_refs"] == 3 and found["source"].endswith("preferthinker.json")

    lora = compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "lora", peft="lora", merge_lora=False))
    final = save_final(StubTrainer(), processor, lora, tmp_path / "lora")
    assert json.loads((final / "adapter" / "preferthinker.json").read_text())["stage"] == "sft"


def test_settings_from_run_config_then_defaults(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "sft_config.yaml").write_text("prompt:\n  style: compact\n  system: none\n  max_refs: 4\nmodel:\n  min_pixels: 784\n  max_pixels: 3136\n")
    found = read_prompt_settings(run / "final")
    assert found == {"style": "compact", "system": "none", "max_refs": 4, "min_pixels": 784, "max_pixels": 3136, "stage": "sft",
                     "source": str(run / "sft_config.yaml")}
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    assert read_prompt_settings(run / "checkpoints" / "checkpoint-5")["max_refs"] == 4
    assert read_prompt_settings(tmp_path / "elsewhere") == {"source": "defaults"}


def test_from_pretrained_uses_recorded_settings_and_processor_bounds(assessor, ckpt, tiny_model):
    s = assessor.settings
    assert (s.style, s.system, s.max_refs, s.stage) == ("compact", "compact", 2, "sft")
    assert (s.min_pixels, s.max_pixels) == (3136, 3136)  # the tiny processor's own bounds
    assert assessor.generator.settings.repetition_penalty == 1.0 and not assessor.generator.settings.do_sample
    # no record anywhere: the official prompt (real / released checkpoints) with the official decoding
    bare = Assessor.from_pretrained(tiny_model, device="cpu", max_new_tokens=4)
    assert (bare.settings.style, bare.settings.system, bare.settings.source) == ("official", "official", "defaults")
    assert bare.generator.settings.repetition_penalty == pytest.approx(1.15)
    # an explicit style brings its own system prompt; explicit values win over the record
    over = Assessor.from_pretrained(ckpt, device="cpu", style="official", max_refs=4, max_new_tokens=4)
    assert (over.settings.style, over.settings.system, over.settings.max_refs) == ("official", "official", 4)
    assert Assessor.from_pretrained(ckpt, device="cpu", system="none", max_new_tokens=4).settings.system is None


# --------------------------------------------------------------------------------------------------
# assess and profile on the real (untrained) tiny model


def test_assess_reports_exactly_what_the_model_wrote(assessor, user):
    """Real model, whatever it writes: the verdict's fields are the parse of its raw text, the swapped order
    was generated too, the probability is a probability, and an unreadable answer is said in the notes."""
    out = assessor.assess(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])
    assert isinstance(out, Verdict) and isinstance(out, Assessment) and isinstance(out.raw, str) and out.raw
    parsed = parse_response(out.raw)
    if out.status in ("from_swapped_order", "retried") and out.attempts[[a["raw"] for a in out.attempts].index(out.raw)]["order"] == "swapped":
        parsed = in_given_names(parsed)  # the swapped prompt's response, reported in the caller's names
    assert (out.answer, out.scores_a, out.total_a, out.format_ok) == (parsed.answer, parsed.scores_a, parsed.total_a, parsed.format_ok)
    assert 0.0 <= out.probability <= 1.0 and out.calibrated is False
    assert out.preferred in ("Image A", "Image B") if out.status != "no_answer" else out.preferred is None
    assert (out.status == "no_answer") == (out.answer is None) == any("no readable <answer> after" in n for n in assessor.last_notes)
    assert out.status == "ok" or any("no readable <answer>" in n for n in assessor.last_notes)
    assert len(out.attempts) == (2 if out.status in ("ok", "from_swapped_order") else 2 + assessor.retry.retries)
    assert assessor.last_inputs["image_a"] == str(user["good"])
    d = out.to_dict()
    assert {"preference", "non_preference", "scores_a", "scores_b", "rationales_a", "rationales_b", "total_a", "total_b",
            "answer", "raw", "format_ok", "probability", "calibrated", "preferred", "swapped_answer", "status", "attempts"} <= set(d)


def test_malformed_text_still_returns_a_verdict(fake, user):
    """Post-processing of a response with no readable block: every field None, a 0.5 probability (no
    evidence either way), and a note; the scripted generation stands in for a model that writes garbage."""
    fake.generator.generate_scored = lambda batch, progress=None: [("<think>Image A is nice but <answer>maybe", None)] * len(batch)
    out = fake.assess(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])
    assert out.answer is None and out.scores_a is None and out.total_a is None and not out.format_ok
    assert out.probability == 0.5 and out.swapped_answer is None and not out.calibrated
    assert any("1 of 1 responses had no readable <answer>" in n for n in fake.last_notes)
    assert out.status == "no_answer" and out.preferred is None and len(out.attempts) == 2 + fake.retry.retries
    assert all(a["raw"] == "<think>Image A is nice but <answer>maybe" and a["answer"] is None for a in out.attempts)


# --------------------------------------------------------------------------------------------------
# no readable answer: the swapped order, then seeded sampled retries, then an honest no_answer

def _answering(answer_from: dict, calls: list):
    """A scripted generator: prompt k of each call answers as ``answer_from[(call, k)]`` says ("A"/"B" with
    totals, else unreadable text); every call records whether it sampled and its temperature."""

    def generate(batch, progress=None):
        gen = fake_gen[0]
        calls.append({"n": len(batch), "do_sample": gen.settings.do_sample, "temperature": gen.settings.temperature,
                      "engine": gen.engine})
        out = []
        for k, _ in enumerate(batch):
            side = answer_from.get((len(calls) - 1, k))
            if side is None:
                out.append((f"<think>lost {len(calls)}.{k}</think>", None))
            else:
                sa, sb = ([4, 4, 4, 4, 4], [1, 1, 1, 1, 1]) if side == "A" else ([1, 1, 1, 1, 1], [4, 4, 4, 4, 4])
                out.append((render_response(PROFILE, {**PROFILE, "Color": "Cobalt"}, sa, sb, ["r"] * 5, ["s"] * 5,
                                            answer=f"Image {side}"), 3.0 if side == "A" else -3.0))
        return out

    fake_gen: list = []
    return generate, fake_gen


def _script(assessor: Assessor, answer_from: dict) -> list:
    calls: list = []
    gen, holder = _answering(answer_from, calls)
    holder.append(assessor.generator)
    assessor.generator.generate_scored = gen
    return calls


def test_answer_from_the_swapped_order_is_mapped_back(fake, user):
    calls = _script(fake, {(0, 1): "A"})  # the given order is unreadable; the swapped one prefers its Image A (= our B)
    out = fake.assess(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])
    assert out.status == "from_swapped_order" and out.answer == "Image B" and out.preferred == "Image B"
    assert (out.total_a, out.total_b, out.scores_b) == (5, 20, [4] * 5)  # scores speak of the caller's A and B
    assert out.probability < 0.5 and out.swapped_answer == "Image B" and len(calls) == 1  # no retry was needed
    assert [a["order"] for a in out.attempts] == ["given", "swapped"] and out.raw == out.attempts[1]["raw"]
    assert any("from the swapped order" in n for n in fake.last_notes)


def test_sampled_retries_are_seeded_bounded_and_restore_greedy(fake, user):
    fake.retry = RetryPolicy(retries=3, temperature=0.5, seed=11)
    calls = _script(fake, {(1, 2): "A"})  # both greedy orders unreadable; the third retry (given order) answers
    out = fake.assess(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])
    assert out.status == "retried" and out.answer == "Image A" and out.preferred == "Image A" and out.total_a == 20
    assert [(c["n"], c["do_sample"]) for c in calls] == [(2, False), (3, True)]  # one batch of 3 sampled retries
    assert calls[1]["temperature"] == 0.5 and calls[1]["engine"] == "hf"
    assert [(a["order"], a["sampled"]) for a in out.attempts] == [("given", False), ("swapped", False), ("given", True),
                                                                  ("swapped", True), ("given", True)]
    assert not fake.generator.settings.do_sample and fake.generator.engine == "fast"  # greedy (auto: fast) again afterwards
    assert any("a sampled retry gave one" in n for n in fake.last_notes)


def test_no_answer_is_said_with_every_raw_text_and_retries_zero_means_none(fake, user):
    fake.retry = RetryPolicy(retries=0)
    calls = _script(fake, {})
    out = fake.assess(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])
    assert out.status == "no_answer" and out.answer is None and out.preferred is None and len(calls) == 1
    assert [a["raw"] for a in out.attempts] == ["<think>lost 1.0</think>", "<think>lost 1.1</think>"]
    assert out.to_dict()["status"] == "no_answer"


def test_batch_retries_only_the_pairs_without_an_answer(fake, user):
    calls = _script(fake, {(0, 0): "A", (0, 3): "B", (1, 1): "B"})  # pair 0 ok, pair 1 from swapped, pair 2 retried
    reqs = [(user["liked"][:2], user["disliked"][:2], user["good"], user["bad"])] * 3
    out = fake.assess_batch(reqs)
    assert [v.status for v in out] == ["ok", "from_swapped_order", "retried"]
    assert [v.answer for v in out] == ["Image A", "Image A", "Image A"]  # retry 2 showed the swapped order: its B is our A
    assert [c["n"] for c in calls] == [6, 2]  # only pair 2's retries were generated


def test_bad_retry_settings_are_refused_before_loading(ckpt):
    for kw in ({"retries": -1}, {"retries": 100}, {"retry_temperature": 0.0}):
        with pytest.raises(AssessInputError, match="retr"):
            Assessor.from_pretrained(ckpt / "does-not-matter", **kw)


def test_paths_pil_and_arrays_give_the_same_response(assessor, user):
    by_path = assessor.assess(user["liked"][:2], user["disliked"][:1], user["good"], user["bad"])
    pil = [Image.open(p).convert("RGB") for p in (*user["liked"][:2], user["disliked"][0], user["good"], user["bad"])]
    by_pil = assessor.assess(pil[:2], pil[2], pil[3], pil[4])
    by_array = assessor.assess(np.stack([np.asarray(pil[0]), np.asarray(pil[1])]), [np.asarray(pil[2])], np.asarray(pil[3]), np.asarray(pil[4]))
    assert by_path.raw == by_pil.raw == by_array.raw


def test_folder_references_and_max_refs_note(assessor, user, tmp_path):
    likes = tmp_path / "likes"
    likes.mkdir()
    for p in user["liked"]:
        shutil.copy(p, likes / p.name)
    (likes / "readme.txt").write_text("not an image")
    out = assessor.assess(likes, user["disliked"], user["good"], user["bad"])
    assert isinstance(out, Assessment)
    assert assessor.last_inputs["liked"] == [str(likes / f"SP_ID0_p{k}.png") for k in range(2)]  # sorted by name, first 2
    notes = " | ".join(assessor.last_notes)
    assert "skipped 1 non-image entry (readme.txt)" in notes
    assert "used the first 2 of 3 liked references" in notes and "used the first 2 of 3 disliked references" in notes


def test_batched_assess_equals_one_by_one(assessor, user):
    reqs = [(user["liked"], user["disliked"], user["good"], user["bad"]),
            {"liked": user["liked"][:1], "disliked": user["disliked"][1:], "image_a": user["bad"], "image_b": user["other"]}]
    batched = assessor.assess_batch(reqs)
    single = [assessor.assess(*reqs[0]), assessor.assess(reqs[1]["liked"], reqs[1]["disliked"], reqs[1]["image_a"], reqs[1]["image_b"])]
    assert [a.raw for a in batched] == [a.raw for a in single]
    assert [a.probability for a in batched] == pytest.approx([a.probability for a in single], abs=1e-4)


def test_profile_alone(assessor, user):
    prof = assessor.profile(user["liked"], user["disliked"])
    assert isinstance(prof.raw, str) and prof.preference == parse_response(prof.raw).preference
    complete = prof.preference is not None and prof.non_preference is not None
    assert (prof.status == "no_answer") == (not complete) == any("contained both profiles" in n for n in assessor.last_notes)
    assert prof.raw in prof.attempts and len(prof.attempts) == (1 if prof.status == "ok" else 1 + assessor.retry.retries)
    assert set(prof.to_dict()) == {"preference", "non_preference", "preference_text", "non_preference_text", "raw", "status", "attempts"}


def test_profile_retries_when_the_greedy_response_lacks_a_profile(fake):
    texts = iter(["<think>nothing", "still nothing", render_response(PROFILE, {**PROFILE, "Color": "Cobalt"}, [3] * 5, [3] * 5,
                                                                        ["r"] * 5, ["s"] * 5, answer="Image A")])
    modes = []

    def generate(batch, progress=None):
        modes.append((len(batch), fake.generator.settings.do_sample))
        return [(next(texts), None) for _ in batch]

    fake.generator.generate_scored = generate
    prof = fake.profile([solid((250, 0, 0))], [solid((0, 0, 250))])
    assert prof.status == "retried" and prof.preference == PROFILE and len(prof.attempts) == 3 and prof.raw == prof.attempts[2]
    assert modes == [(1, False), (2, True)]  # one greedy call, then one batch of the two sampled retries


def test_huge_image_is_downscaled_to_the_processor_limit(assessor, user, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (200, 30, 40)).save(big)
    out = assessor.assess(user["liked"][:1], user["disliked"][:1], big, user["bad"])
    assert isinstance(out, Assessment)
    from preferthinker.assess import ImageInput

    img = assessor._load(ImageInput(str(big), str(big)), "image_a")
    assert img.width * img.height <= assessor.settings.max_pixels and img.width % 28 == 0 and img.height % 28 == 0


# --------------------------------------------------------------------------------------------------
# bad inputs: one clear error each


def test_missing_file_error(assessor, user, tmp_path):
    with pytest.raises(ImageLoadError, match=r"liked: file does not exist: .*nope\.png"):
        assessor.assess([tmp_path / "nope.png"], user["disliked"], user["good"], user["bad"])
    with pytest.raises(ImageLoadError, match=r"image_b: file does not exist"):
        assessor.assess(user["liked"], user["disliked"], user["good"], tmp_path / "gone.jpg")


def test_non_image_error(assessor, user, tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("this is text, not a PNG")
    with pytest.raises(ImageLoadError, match=r"disliked\[0\]: cannot read .*notes\.png as an image"):
        assessor.assess(user["liked"], [txt], user["good"], user["bad"])


def test_corrupt_image_error(assessor, user, tmp_path):
    bad = tmp_path / "truncated.png"
    data = user["good"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"image_a: cannot read .*truncated\.png as an image"):
        assessor.assess(user["liked"], user["disliked"], bad, user["bad"])


def test_fewer_than_one_reference_per_side_error(assessor, user, tmp_path):
    with pytest.raises(AssessInputError, match="need at least one liked reference image, got none"):
        assessor.assess([], user["disliked"], user["good"], user["bad"])
    with pytest.raises(AssessInputError, match="need at least one disliked reference image"):
        assessor.profile(user["liked"], [])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageLoadError, match=r"disliked: folder .*empty contains no image files \(it is empty\)"):
        assessor.assess(user["liked"], empty, user["good"], user["bad"])


def test_rank_candidate_count_errors(assessor, user):
    with pytest.raises(AssessInputError, match="at least two candidates, got 1"):
        assessor.rank(user["liked"], user["disliked"], [user["good"]])
    with pytest.raises(AssessInputError, match=r"17 candidates need 272 generations; the limit is 16 candidates \(240"):
        assessor.rank(user["liked"], user["disliked"], [solid((k, 0, 0)) for k in range(17)])


# --------------------------------------------------------------------------------------------------
# rank: consistency with assess on the real model (greedy decoding is deterministic)


@pytest.mark.slow
def test_rank_pairwise_records_equal_separate_assess_calls(assessor, user):
    cands = [user["good"], user["bad"], user["other"]]
    ranking = assessor.rank(user["liked"], user["disliked"], cands)
    assert len(ranking.comparisons) == 6 and {(c.a, c.b) for c in ranking.comparisons} == {(i, j) for i in range(3) for j in range(3) if i != j}
    for c in ranking.comparisons:
        single = assessor.assess(user["liked"], user["disliked"], cands[c.a], cands[c.b])
        assert c.assessment.raw == single.raw and c.assessment.answer == single.answer
    # whatever the model wrote: each pair hands out one win in total, unreadable orders are said in the notes
    assert sorted(e.index for e in ranking) == [0, 1, 2] and sum(e.wins for e in ranking) == pytest.approx(3.0)
    assert any("counted as ties" in n for n in ranking.notes) == any(not c.parsed for c in ranking.comparisons)
    assert all(0 <= e.probability <= 1 for e in ranking) and ranking.timing["pairs"] == 3 and ranking.timing["pairs_per_s"] > 0
    doc = ranking.to_dict()
    assert {"scheme", "candidates", "ranking", "comparisons", "notes", "timing"} <= set(doc) and doc["ranking"][0]["pairwise"]


# --------------------------------------------------------------------------------------------------
# rank arithmetic with a scripted generator that writes well-formed responses

PROFILE = {"Art Styles": "Minimalism", "Color": "Crimson", "Artistic Medium": "Flat Digital", "Saturation": "Vivid", "Detail": "Smooth"}


def _candidates(messages: list[dict]) -> tuple[Image.Image, Image.Image]:
    content = messages[-1]["content"]
    at = {c.get("text"): k for k, c in enumerate(content) if c["type"] == "text"}
    return content[at["Image A"] + 1]["image"], content[at["Image B"] + 1]["image"]


def _redness(img: Image.Image) -> int:
    return int(round(np.asarray(img)[..., 0].mean() / 51))  # 0..5


def scripted(assessor: Assessor, bias_a: bool = False, unreadable: set | None = None):
    """Replace the model: the redder candidate wins (or Image A always, with bias_a); prompts whose
    (redness A, redness B) is in ``unreadable`` get text without an answer."""

    def generate(batch, progress=None):
        out = []
        for messages in batch:
            a, b = _candidates(messages)
            ra, rb = _redness(a), _redness(b)
            if unreadable and (ra, rb) in unreadable:
                out.append(("<think>no idea</think>", None))
                continue
            answer = "Image A" if bias_a or ra > rb else "Image B"
            out.append((render_response(PROFILE, {**PROFILE, "Color": "Cobalt"}, [3, ra, 3, 3, 3], [3, rb, 3, 3, 3],
                                        [f"red {ra}"] * 5, [f"red {rb}"] * 5, answer=answer), 2.0 if answer == "Image A" else -2.0))
        return out

    assessor.generator.generate_scored = generate
    return assessor


@pytest.fixture
def fake(ckpt) -> Assessor:
    # a fresh instance per test: the scripted generate() is patched onto it
    return Assessor.from_pretrained(ckpt, device="cpu", max_new_tokens=MAX_NEW)


def test_rank_orders_by_wins_and_matches_assess(fake):
    scripted(fake)
    refs = ([solid((250, 0, 0))], [solid((0, 0, 250))])
    cands = [solid((100, 0, 0)), solid((250, 0, 0)), solid((0, 0, 0)), solid((160, 0, 0))]
    ranking = fake.rank(*refs, cands)
    assert [e.index for e in ranking] == [1, 3, 0, 2] and [e.rank for e in ranking] == [1, 2, 3, 4]
    assert [e.wins for e in ranking] == [3.0, 2.0, 1.0, 0.0]
    assert ranking[0].mean_total == 17 and ranking[0].mean_margin == pytest.approx((3 + 2 + 5) / 3)
    assert all(p["agree"] for e in ranking for p in e.pairwise) and not ranking.notes
    # both orders agree with log-odds +-2: P(win) = sigmoid(2) against every opponent, uncalibrated
    assert ranking[0].probability == pytest.approx(1 / (1 + np.exp(-2))) and not ranking.calibrated
    assert ranking[-1].probability == pytest.approx(1 - ranking[0].probability)
    assert ranking[0].rationale.startswith("Art Styles 3: red 5; Color 5: red 5")
    # N=2: rank's order is the order assess gives when both orders agree
    for i, j in [(0, 1), (3, 2)]:
        two = fake.rank(*refs, [cands[i], cands[j]])
        ab, ba = fake.assess(*refs, cands[i], cands[j]), fake.assess(*refs, cands[j], cands[i])
        assert (ab.answer == "Image A") == (ba.answer == "Image B")  # the two orders agree
        winner = i if ab.answer == "Image A" else j
        assert two[0].candidate == two.candidates[0 if winner == i else 1] and two[0].wins == 1.0 and two[1].wins == 0.0
    # N=3: every stored pairwise outcome equals a separate assess call on that ordered pair
    three = fake.rank(*refs, cands[:3])
    for c in three.comparisons:
        assert c.assessment.answer == fake.assess(*refs, cands[:3][c.a], cands[:3][c.b]).answer


def test_position_bias_is_a_draw_and_totals_break_ties(fake):
    scripted(fake, bias_a=True)  # always "Image A": each pair is split 1/0 and 0/1 -> 0.5 each
    cands = [solid((0, 0, 0)), solid((250, 0, 0)), solid((120, 0, 0))]
    ranking = fake.rank([solid((250, 0, 0))], [solid((0, 0, 250))], cands)
    assert all(e.wins == 1.0 for e in ranking)
    assert [e.index for e in ranking] == [1, 2, 0] and [e.rank for e in ranking] == [1, 2, 3]  # by mean total margin
    assert any("position bias" in n for n in ranking.notes)
    assert not any(p["agree"] for e in ranking for p in e.pairwise)


def test_unparseable_comparison_counts_as_a_tie(fake):
    scripted(fake, unreadable={(5, 0)})  # red shown as A against black: no answer
    ranking = fake.rank([solid((250, 0, 0))], [solid((0, 0, 250))], [solid((250, 0, 0)), solid((0, 0, 0))])
    red, black = sorted(ranking, key=lambda e: e.index)
    assert red.wins == 0.75 and black.wins == 0.25 and red.rank == 1  # (0.5 + 1) / 2 vs (0.5 + 0) / 2
    assert red.pairwise[0]["orders"][0]["outcome"] == 0.5 and red.pairwise[0]["orders"][0]["answer"] is None
    assert any("1 of 2 comparisons had no readable <answer>" in n for n in ranking.notes)


def test_profile_reads_the_first_two_blocks_with_references_as_candidates(fake):
    seen = []
    scripted(fake)
    inner = fake.generator.generate_scored

    def spy(batch, progress=None):
        seen.extend(_candidates(m) for m in batch)
        return inner(batch)

    fake.generator.generate_scored = spy
    prof = fake.profile([solid((250, 0, 0))], [solid((0, 0, 250))])
    assert prof.preference == PROFILE and prof.non_preference["Color"] == "Cobalt"
    a, b = seen[0]
    assert np.asarray(a)[0, 0].tolist() == [250, 0, 0] and np.asarray(b)[0, 0].tolist() == [0, 0, 250]


def test_rank_from_comparisons_shares_ranks_on_full_ties():
    empty = parse_response("")
    comps = [Comparison(0, 1, empty), Comparison(1, 0, empty)]
    ranking = rank_from_comparisons(comps, ["x", "y"])
    assert [e.rank for e in ranking] == [1, 1] and [e.candidate for e in ranking] == ["x", "y"]
    assert ranking[0].mean_total is None and "share a rank" in ranking.notes[-1]


def test_verdict_probability_uses_both_orders_and_the_stored_calibrator(fake, tmp_path):
    from preferthinker.calibration import Calibrator

    scripted(fake)
    refs = ([solid((250, 0, 0))], [solid((0, 0, 250))])
    red, dark = solid((250, 0, 0)), solid((50, 0, 0))
    v = fake.assess(*refs, red, dark)
    assert v.answer == "Image A" and v.swapped_answer == "Image A" and v.preferred == "Image A"
    assert v.probability == pytest.approx(1 / (1 + np.exp(-2))) and v.evidence["vote"] == 1.0
    assert fake.assess(*refs, dark, red).probability == pytest.approx(1 - v.probability)
    fake.calibrator = Calibrator(coef=[0.5, 1.0, 0.0])
    w = fake.assess(*refs, red, dark)
    assert w.calibrated and w.probability == pytest.approx(1 / (1 + np.exp(-(0.5 * 2 + 1.0))))
    # position bias: "Image A" in both orders -> no net evidence
    scripted(fake, bias_a=True)
    fake.calibrator = None
    assert fake.assess(*refs, red, dark).probability == pytest.approx(0.5)


def test_write_ranking_json_csv_and_top_k(fake, tmp_path):
    import csv

    from preferthinker.ranking import write_ranking

    scripted(fake)
    cands = [solid((100, 0, 0)), solid((250, 0, 0)), solid((0, 0, 0))]
    ranking = fake.rank([solid((250, 0, 0))], [solid((0, 0, 250))], cands)
    rows = list(csv.DictReader(open(write_ranking(ranking, tmp_path / "r.csv", top_k=2), encoding="utf-8")))
    assert [r["rank"] for r in rows] == ["1", "2"] and rows[0]["candidate"] == ranking[0].candidate
    assert float(rows[0]["score"]) == 2.0 and 0.5 < float(rows[0]["probability"]) <= 1 and "Color 5" in rows[0]["rationale"]
    doc = json.loads(write_ranking(ranking, tmp_path / "r.json", header={"model": "m"}).read_text())
    assert doc["model"] == "m" and len(doc["ranking"]) == 3 and doc["probability"].startswith("uncalibrated")
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        write_ranking(ranking, tmp_path / "no" / "r.csv")
