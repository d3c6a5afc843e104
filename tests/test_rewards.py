"""Tests of the preferthinker.rewards package: scores, hack defences, None vs 0.0, configs, backends, TRL shape.

Offline (HF_HUB_OFFLINE=1), CPU. The MiniLM embedder loads once per session (~6 s); the diffusers
plumbing test builds a tiny random Stable-Diffusion-shaped pipeline and a tiny random ViT in tmp_path.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from preferthinker.response import parse_response, render_response
from preferthinker.rewards import (
    REWARDS,
    AccuracyReward,
    ConsistencyReward,
    DiffusersImageBackend,
    FormatReward,
    ImageQuery,
    ProfileReward,
    ProfileScorer,
    SyntheticImageBackend,
    build_rewards,
    completion_text,
    reward_report,
    validate_reward_config,
)
from preferthinker.runtime import ConfigError

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")

# Both profiles use terms of the synthetic vocabulary, so the synthetic renderer can draw them.
PREF = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Pencil Sketch", "Saturation": "Muted", "Detail": "Fine"}
NONPREF = {"Art Styles": "Pop Art", "Color": "Crimson Red", "Artistic Medium": "Flat Digital", "Saturation": "Intense", "Detail": "Smooth"}
WRONG = {"Art Styles": "Art Deco", "Color": "Golden Yellow", "Artistic Medium": "Woodcut Print", "Saturation": "Vivid", "Detail": "Hyper-detailed"}

GOOD = render_response(PREF, NONPREF, [5, 4, 4, 5, 4], [1, 2, 1, 0, 2],
                       ["cubist facets"] * 5, ["flat pop shapes"] * 5)  # answer: Image A (22 vs 6)


def cols(n=1, **over):
    """Dataset columns as TRL passes them (one value per completion)."""
    base = {
        "solution": ["Image A"] * n,
        "prefer_attributes": [PREF] * n,
        "non_prefer_attributes": [NONPREF] * n,
        "reference_prompt_list": [["a scatter composition"]] * n,
        "content_seed": [1234] * n,
        "true_scores_a": [[5, 4, 4, 5, 4]] * n,  # GOOD's own per-element scores (element_scores)
        "true_scores_b": [[1, 2, 1, 0, 2]] * n,
    }
    base.update({k: (v if isinstance(v, list) else [v] * n) for k, v in over.items()})
    return base


def block(tag, body):
    return f"<{tag}>\n{body}\n</{tag}>"


def with_pref_block(body: str) -> str:
    """GOOD with the inside of the preference block replaced."""
    start = GOOD.index("<visual preference profile>") + len("<visual preference profile>")
    end = GOOD.index("</visual preference profile>")
    return GOOD[:start] + body + GOOD[end:]


def profile_lines(p):
    return ",\n".join(f'"{k}": "{v}"' for k, v in p.items())


@pytest.fixture(scope="session")
def text_only():
    funcs, _ = build_rewards({"names": ["pref_profile", "nonpref_profile"], "weights": [1, 1],
                              "prediction": {"image_backend": "none"}})
    return funcs


@pytest.fixture(scope="session")
def synthetic():
    funcs, _ = build_rewards({"names": ["pref_profile", "nonpref_profile"], "weights": [1, 1],
                              "prediction": {"image_backend": "synthetic", "w_text": 0.5, "w_img": 0.5}})
    return funcs


class Metrics(dict):
    """A stand-in for TRL's log_metric."""

    def __call__(self, name, value):
        self.setdefault(name, []).append(value)


# ------------------------------------------------------------------------------------------------
# accuracy / format / consistency


def test_accuracy_correct_incorrect_malformed():
    acc = AccuracyReward()
    texts = [
        GOOD,                                    # correct
        GOOD.replace("<answer>Image A", "<answer>Image B"),  # wrong image
        "<answer> image a. </answer>",            # normalised like the released code: correct
        "<answer>Image C</answer>",               # not an answer
        "Image A",                                # no answer block
        "",
    ]
    assert acc(texts, solution=["Image A"] * len(texts)) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_accuracy_label_forms_and_none():
    acc = AccuracyReward()
    out = acc([GOOD, GOOD, GOOD], solution=["<answer> Image A </answer>", None, "image b"])
    assert out == [1.0, None, 0.0]  # the released GRPO label form; no label -> None; wrong -> 0.0
    with pytest.raises(ValueError, match="row 0.*'Image A' or 'Image B'"):
        acc([GOOD], solution=["Image C"])
    with pytest.raises(ValueError, match="'solution' column"):
        acc([GOOD])


def test_format_and_consistency():
    fmt, con = FormatReward(), ConsistencyReward()
    assert fmt([GOOD]) == [1.0] and con([GOOD]) == [1.0]
    flipped = render_response(PREF, NONPREF, [5, 4, 4, 5, 4], [1, 2, 1, 0, 2], answer="Image B")
    assert fmt([flipped]) == [1.0] and con([flipped]) == [0.0]  # well-formed but the answer contradicts the totals
    bad_total = GOOD.replace("=22", "=23")
    assert con([bad_total]) == [0.0]  # total does not equal the sum of its scores
    assert fmt(["<think>x</think><answer>Image A</answer>"]) == [0.0]  # profiles missing


def test_element_scores_reward():
    """The share of the ten per-element scores equal to the truth; 0.0 unread; None without truth; missing
    columns are an error, not a silent 0 (the recipe refuses the reward when no record has truth)."""
    rew = REWARDS["element_scores"](validate_reward_config({"names": ["element_scores"], "weights": [1.0]}))
    assert rew.__name__ == "element_scores"
    ta, tb = [5, 4, 4, 5, 4], [1, 2, 1, 0, 2]  # GOOD's own scores
    one_off = render_response(PREF, NONPREF, [5, 4, 4, 5, 3], [1, 2, 1, 0, 2])
    logged = {}
    out = rew([GOOD, one_off, "<answer>Image A</answer>", GOOD], true_scores_a=[ta, ta, ta, None],
              true_scores_b=[tb, tb, tb, None], log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1.0, 0.9, 0.0, None]
    assert logged["rewards/element_scores/scores_readable_rate"] == pytest.approx(2 / 3)
    assert rew([GOOD], true_scores_a=[None], true_scores_b=[None]) == [None]  # a real-data row among synthetic ones
    with pytest.raises(ValueError, match="needs 'true_scores_a'.*PreferImg does not"):
        rew([GOOD], solution=["Image A"])
    with pytest.raises(ValueError, match="row 0: expected five integers"):
        rew([GOOD], true_scores_a=[[5, 4]], true_scores_b=[tb])


def test_profile_exact_reward():
    """The share of the ten profile slots whose term set equals the gold one (order- and case-free): a
    multi-preference slot with one of its two terms scores 0 for that slot; None without gold; 0.0 unread."""
    rew = REWARDS["profile_exact"](validate_reward_config({"names": ["profile_exact"], "weights": [1.0]}))
    assert rew.__name__ == "profile_exact"
    gold_p = {**PREF, "Art Styles": "Cubism, Minimalism"}
    two = render_response({**PREF, "Art Styles": "minimalism, Cubism"}, NONPREF, [5, 4, 4, 5, 4], [1, 2, 1, 0, 2])
    one = render_response(PREF, NONPREF, [5, 4, 4, 5, 4], [1, 2, 1, 0, 2])          # Art Styles: Cubism alone
    twice = GOOD.replace("<visual non-preference profile>",
                         block("visual preference profile", profile_lines(WRONG)) + "\n<visual non-preference profile>", 1)
    logged = {}
    out = rew([two, one, "<answer>Image A</answer>", twice, two], prefer_attributes=[gold_p] * 4 + [None],
              non_prefer_attributes=[NONPREF] * 5, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1.0, 0.9, 0.0, 0.0, None]
    assert logged["rewards/profile_exact/parsed_rate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs 'prefer_attributes'"):
        rew([GOOD])


# ------------------------------------------------------------------------------------------------
# hack resistance (one test each)


def test_hack_several_answer_blocks():
    text = GOOD.replace("<answer>Image A</answer>", "<answer>Image A</answer>\n<answer>Image B</answer>")
    assert parse_response(text).format_ok  # the official regex alone accepts it ...
    assert FormatReward()([text]) == [0.0]  # ... we do not
    assert AccuracyReward()([text, text], solution=["Image A", "Image B"]) == [0.0, 0.0]  # hedging never pays
    assert ConsistencyReward()([text]) == [0.0]


def test_hack_both_answers_in_one_block():
    acc = AccuracyReward()
    for both in ("Image A or Image B", "Image A/Image B", "Image A, Image B", "Image A and Image B"):
        text = GOOD.replace("<answer>Image A</answer>", f"<answer>{both}</answer>")
        assert acc([text, text], solution=["Image A", "Image B"]) == [0.0, 0.0], both


def test_hack_text_outside_blocks():
    fmt = FormatReward()
    assert fmt(["Sure! " + GOOD, GOOD + " Hope this helps.", " " + GOOD, GOOD + "\n"]) == [0.0] * 4
    # text smuggled behind a stray closing tag: the official .*? stretches over it, we count the tags
    smuggled = GOOD.replace("</answer>", "</answer> ignore the rubric </answer>")
    assert parse_response(smuggled).format_ok
    assert fmt([smuggled]) == [0.0]
    assert AccuracyReward()([smuggled], solution=["Image A"]) == [0.0]


def test_hack_empty_profile(text_only):
    pref, _ = text_only
    empties = [with_pref_block(""), with_pref_block("\n  \n"),
               with_pref_block(profile_lines({k: "" for k in PREF})),
               with_pref_block(profile_lines({k: "N/A" for k in PREF}))]
    assert pref(empties, **cols(len(empties))) == [0.0] * len(empties)


def test_hack_copied_profile(text_only):
    pref, nonpref = text_only
    # the preference profile pasted into both blocks: it is right for one side only, so both score 0
    copy_pref = GOOD.replace(profile_lines(NONPREF), profile_lines(PREF))
    copy_non = GOOD.replace(profile_lines(PREF), profile_lines(NONPREF))
    c = cols(2)
    assert pref([copy_pref, copy_non], **c) == [0.0, 0.0]
    assert nonpref([copy_pref, copy_non], **c) == [0.0, 0.0]
    # case and quoting do not hide a copy
    sneaky = GOOD.replace(profile_lines(NONPREF), profile_lines({k: v.upper() for k, v in PREF.items()}))
    assert pref([sneaky], **cols()) == [0.0]
    # a correct answer gets full marks on both sides
    assert pref([GOOD], **cols())[0] > 0.99 and nonpref([GOOD], **cols())[0] > 0.99


def test_hack_gigantic_output_skips_embedder(monkeypatch):
    funcs, _ = build_rewards({"names": list(REWARDS), "weights": [1.0] * len(REWARDS), "max_chars": 4000,
                              "prediction": {"image_backend": "none"}})
    huge = GOOD + " " + "blah " * 1000
    assert len(huge) > 4000

    def boom(*a, **k):
        raise AssertionError("the embedder must not run on an oversize completion")

    monkeypatch.setattr(ProfileScorer, "embedder", boom)
    for fn in funcs:
        assert fn([huge], **cols()) == [0.0], fn.__name__
    # the default limit is 16k characters
    assert AccuracyReward()([GOOD + " " * 16_001], solution=["Image A"]) == [0.0]


def test_hack_repeated_profile_block(text_only):
    pref, _ = text_only
    twice = GOOD.replace("<visual non-preference profile>",
                         block("visual preference profile", profile_lines(WRONG)) + "\n<visual non-preference profile>", 1)
    assert pref([twice], **cols()) == [0.0]


def test_unparsable_profile_is_capped(text_only):
    pref, _ = text_only
    four = {k: v for k, v in PREF.items() if k != "Detail"}  # an element missing: not a readable profile
    partial = with_pref_block(profile_lines(four))
    assert parse_response(partial).preference is None
    got = pref([partial, GOOD], **cols(2))
    assert 0.0 < got[0] <= 0.5 < got[1]


# ------------------------------------------------------------------------------------------------
# None vs 0.0


def test_none_only_where_the_reward_does_not_apply(text_only):
    pref, nonpref = text_only
    c = cols(3, prefer_attributes=[None, {k: None for k in PREF}, PREF])
    assert pref([GOOD, GOOD, "garbage"], **c) == [None, None, 0.0]  # no gold, no gold (datasets' form), malformed
    assert pref([GOOD], solution=["Image A"]) == [None]  # no gold column at all (real-user data)
    as_text = "Art Styles: Cubism, Color: Teal, Artistic Medium: Pencil Sketch, Saturation: Muted, Detail: Fine"
    got = pref([GOOD, GOOD], prefer_attributes=[json.dumps(PREF), as_text])  # gold stored as JSON / official string
    assert got == [pytest.approx(1.0, abs=1e-4)] * 2
    assert nonpref(["garbage"], **cols()) == [0.0]
    assert FormatReward()(["garbage"]) == [0.0]
    with pytest.raises(ValueError, match="prefer_attributes.*row 0"):
        pref([GOOD], prefer_attributes=[{"Art Styles": "Cubism"}])  # a broken gold profile fails loudly
    with pytest.raises(ValueError, match=r"no term for \['Color'\]"):
        pref([GOOD], prefer_attributes=[dict(PREF, Color=None)])


# ------------------------------------------------------------------------------------------------
# registry and config validation


@pytest.mark.parametrize("name", ["paper", "acc_format", "full"])
def test_real_configs_build(name):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from preferthinker.runtime import register_resolvers

    register_resolvers()  # as every entry point does: the presets start from reward/schema
    GlobalHydra.instance().clear()  # another test may have left Hydra initialised
    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=[f"+reward={name}"]).reward
    funcs, weights = build_rewards(cfg)
    names = [f.__name__ for f in funcs]
    assert names == list(cfg.names) and weights == list(cfg.weights)
    expected = {"paper": 2.0, "acc_format": 1.3, "full": 2.2}[name]
    assert sum(weights) == pytest.approx(expected)  # every raw score is at most 1.0
    if name == "paper":
        assert weights[:2] == [1.0, 0.3] and sum(weights[2:]) == pytest.approx(0.7)
    if name == "acc_format":
        assert names == ["accuracy", "format"]
    if name == "full":
        assert "consistency" in names


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"names": ["accuracy", "format"], "weights": [1.0]}, r"weights has 1 entries but reward.names has 2"),
        ({"names": ["accuracy", "vibes"], "weights": [1, 1]}, r"unknown reward\(s\) \['vibes'\]; choose from \['accuracy'"),
        ({"names": ["accuracy"], "weights": [-1]}, r"must be >= 0"),
        ({"names": ["accuracy"], "weights": ["x"]}, r"reward.weights\[0\] \(accuracy\) must be a finite number"),
        ({"names": ["accuracy"]}, r"reward.weights is missing"),
        ({"names": [], "weights": []}, r"non-empty list"),
        ({"names": ["accuracy", "accuracy"], "weights": [1, 1]}, r"more than once"),
        ({"names": ["accuracy"], "weights": [1], "typo": 1}, r"unknown key\(s\) \['typo'\]"),
        ({"names": ["accuracy"], "weights": [1], "max_chars": 0}, r"max_chars must be a positive integer"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"w_text": 0, "w_img": 0}}, r"w_text \+ w_img must be > 0"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"w_text": -1}}, r"must be >= 0"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"image_backend": "flux"}}, r"image_backend must be one of \['none', 'synthetic', 'diffusers'\]"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"image_backend": "none", "w_text": 0}}, r"set w_text > 0"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"image_backend": "diffusers"}}, r"diffusers.pipeline_path is required"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"wtext": 1}}, r"reward.prediction: unknown key\(s\) \['wtext'\]"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"diffusers": {"target": "ref"}}}, r"target must be one of"),
        # the synthetic renderer no longer maps unknown terms (issue #22): the old knob is refused by name
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"synthetic": {"oov": "nearest"}}}, r"synthetic.oov was removed"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"diffusers": {"device": "gpu"}}}, r"diffusers.device must be auto, cpu"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"diffusers": {"size": 10**6}}}, r"diffusers.size must be an integer in 8..4096"),
        ({"names": ["pref_profile"], "weights": [1], "prediction": {"image_backend": "diffusers", "diffusers":
          {"pipeline_path": "/no/such/flux", "metric_path": "/no/such/dreamsim"}}}, r"pipeline_path=/no/such/flux: no such folder"),
    ],
)
def test_config_validation_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate_reward_config(cfg)


def test_registry_names_are_stable_and_picklable(synthetic):
    funcs, _ = build_rewards({"names": list(REWARDS), "weights": [1.0] * len(REWARDS)})
    assert [f.__name__ for f in funcs] == list(REWARDS)
    clones = pickle.loads(pickle.dumps(funcs))
    assert [f.__name__ for f in clones] == list(REWARDS)
    assert clones[0]([GOOD], solution=["Image A"]) == [1.0]
    # the two profile rewards share one scorer (one embedder, one image backend), also after pickling
    assert funcs[2].scorer is funcs[3].scorer and clones[2].scorer is clones[3].scorer
    # a loaded scorer pickles without its models
    synthetic[0]([GOOD], **cols())
    state = pickle.loads(pickle.dumps(synthetic[0])).scorer
    assert state._embedder is None and state.image_backend._renderer is None


# ------------------------------------------------------------------------------------------------
# s_text


def test_s_text_true_vs_wrong_batching_and_cache(text_only):
    pref, _ = text_only
    wrong = GOOD.replace(profile_lines(PREF), profile_lines(WRONG))
    near = GOOD.replace('"Color": "Teal"', '"Color": "Turquoise"')
    m = Metrics()
    got = pref([GOOD, near, wrong], log_metric=m, **cols(3))
    assert got[0] == pytest.approx(1.0, abs=1e-4)
    assert got[0] > got[1] > got[2]  # a synonym-ish term keeps most of the credit
    assert m["rewards/pref_profile/s_text"][0] == pytest.approx(np.mean(got), abs=1e-6)

    emb = pref.scorer.embedder()
    calls = []
    real_encode = emb.model.encode

    def counting_encode(texts, **kw):
        calls.append(len(texts))
        return real_encode(texts, **kw)

    emb.model.encode = counting_encode
    try:
        fresh = [GOOD.replace('"Detail": "Fine"', f'"Detail": "Fine {i}"') for i in range(5)]
        pref(fresh, **cols(5))
        assert calls == [5]  # one batched call for five new strings (the gold string is cached)
        pref(fresh, **cols(5))
        assert calls == [5]  # everything cached: no model call
    finally:
        emb.model.encode = real_encode


# ------------------------------------------------------------------------------------------------
# s_img, synthetic backend


def test_s_img_synthetic_true_beats_wrong(synthetic):
    pref, nonpref = synthetic
    wrong = GOOD.replace(profile_lines(PREF), profile_lines(WRONG))
    one_off = GOOD.replace('"Color": "Teal"', '"Color": "Violet"')
    m = Metrics()
    got = pref([GOOD, one_off, wrong], log_metric=m, log_extra=lambda *a: None, **cols(3))
    assert got[0] == pytest.approx(1.0, abs=1e-4) and got[0] > got[1] > got[2]
    backend = pref.scorer.image_backend
    q = [ImageQuery(pred=p, true=PREF, side="pref", content_seed=7) for p in (PREF, WRONG)]
    s_true, s_wrong = backend.similarity(q)
    assert s_true == pytest.approx(1.0) and s_wrong < 0.7
    assert m["rewards/pref_profile/s_img"] and m["rewards/pref_profile/oov_rate"] == [0.0]
    # no content seed and no prompt / image to derive one from: text-only, logged as a fallback
    m2 = Metrics()
    c = cols(1, content_seed=[None], reference_prompt_list=[None])
    assert nonpref([GOOD], log_metric=m2, **c)[0] == pytest.approx(1.0, abs=1e-4)
    assert m2["rewards/nonpref_profile/img_fallback_rate"] == [1.0]


def test_s_img_synthetic_refuses_out_of_vocabulary_terms(synthetic, caplog):
    """The renderer draws only its own terms (issue #22): it never maps a term to a "nearest" one.
    A predicted unknown term is a wrong term (s_img 0.0, counted in oov_rate); a gold one means the data
    is not synthetic: no image term (text-only, counted in gold_oov_rate) and one warning naming the fix."""
    from preferthinker.rewards import OutOfVocabularyError

    backend = SyntheticImageBackend(size=32)
    # "cubist" and "teal blue green" are not vocabulary terms; " pencil  SKETCH." is one, spelled loosely
    oov_pred = dict(PREF, **{"Art Styles": "cubist", "Color": "teal blue green", "Artistic Medium": " pencil  SKETCH."})
    with pytest.raises(OutOfVocabularyError, match=r"'cubist' \(Art Styles\), 'teal blue green' \(Color\) not in the synthetic vocabulary"):
        backend.vocabulary_profile(oov_pred)
    assert backend.vocabulary_profile(dict(PREF, **{"Artistic Medium": " pencil  SKETCH."})) == PREF
    q = [ImageQuery(pred=oov_pred, true=PREF, side="pref", content_seed=3),
         ImageQuery(pred=PREF, true=PREF, side="pref", content_seed=3)]
    assert backend.similarity(q) == [0.0, pytest.approx(1.0)]
    assert backend.last_oov_rate == pytest.approx(2 / 10) and "'cubist' (Art Styles)" in backend.last_refusals[0]
    # gold outside the vocabulary (not synthetic data): no s_img rather than a made-up one
    alien = dict(PREF, **{"Art Styles": "Mesoamerican Art"})
    assert backend.similarity([ImageQuery(pred=PREF, true=alien, side="pref", content_seed=3, where="row 4")]) == [None]
    assert backend.last_gold_oov_rate == 1.0 and "row 4: gold pref profile term(s) 'Mesoamerican Art' (Art Styles)" in backend.last_gold_refusal
    # through the reward: the OOV prediction loses its image term, the run goes on
    pref, _ = synthetic
    m = Metrics()
    oov_text = GOOD.replace('"Art Styles": "Cubism"', '"Art Styles": "cubist"')
    got = pref([GOOD, oov_text], log_metric=m, **cols(2))
    assert got[0] == pytest.approx(1.0, abs=1e-4) and got[1] < 0.5 * 1.0 + 1e-6  # s_img 0.0, at most half
    assert m["rewards/pref_profile/oov_rate"] == [pytest.approx(1 / 10)]
    m = Metrics()
    pref.scorer.image_backend.warned_gold = False  # the fixture is shared: warn afresh here
    with caplog.at_level("WARNING", logger="preferthinker.rewards"):
        got = pref([GOOD], log_metric=m, **cols(1, prefer_attributes=[alien]))
        pref([GOOD], **cols(1, prefer_attributes=[alien]))
    assert got == [pytest.approx(m["rewards/pref_profile/s_text"][0])] and "rewards/pref_profile/s_img" not in m  # text-only
    assert m["rewards/pref_profile/gold_oov_rate"] == [1.0] and m["rewards/pref_profile/img_fallback_rate"] == [1.0]
    assert caplog.text.count("cannot draw this data's gold profiles") == 1 and "reward=paper_real" in caplog.text


# ------------------------------------------------------------------------------------------------
# s_img, diffusers backend (tiny random components, built offline)


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("tiny_t2i")
    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789,:-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (root / "tok").mkdir()
    (root / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"),
                              model_max_length=32, pad_token="<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             image_size=32, patch_size=8))
    vit.save_pretrained(root / "metric")
    return root


@pytest.mark.slow  # builds and runs a tiny diffusers pipeline (~6 s on 2 cores)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 __array__ notice inside diffusers' scheduler
def test_diffusers_backend_plumbing(tiny_t2i, tmp_path):
    from PIL import Image

    cfg = {"names": ["pref_profile", "nonpref_profile"], "weights": [0.35, 0.35],
           "prediction": {"image_backend": "diffusers", "w_text": 0.5, "w_img": 0.5,
                          "diffusers": {"pipeline_path": str(tiny_t2i / "pipe"), "metric_path": str(tiny_t2i / "metric"),
                                        "device": "cpu", "steps": 1, "size": 32, "batch_size": 8}}}
    (pref, nonpref), _ = build_rewards(cfg)
    wrong = GOOD.replace(profile_lines(PREF), profile_lines(WRONG))
    m = Metrics()
    got = pref([GOOD, wrong], log_metric=m, **cols(2))
    assert all(0.0 <= g <= 1.0 for g in got) and got[0] == pytest.approx(1.0, abs=1e-4)  # same prompt, same seed
    assert m["rewards/pref_profile/img_fallback_rate"] == [0.0] and m["rewards/pref_profile/img_error"] == [0.0]
    backend = pref.scorer.image_backend
    assert isinstance(backend, DiffusersImageBackend)
    assert DiffusersImageBackend.profile_prompt("a scatter composition", PREF).startswith("a scatter composition, art styles: cubism")
    assert len(backend._cache) == 2  # gold, wrong: the correct prediction's prompt is the gold prompt, rendered once
    again = pref([GOOD, wrong], **cols(2))
    assert again == pytest.approx(got)  # deterministic (seeded generators), served from the cache

    # target "reference_image": compare with the first reference image of the side (released code)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "ref.png")
    cfg["prediction"]["diffusers"].update(target="reference_image", image_root=str(tmp_path))
    (pref_ref, _), _ = build_rewards(cfg)
    m = Metrics()
    out = pref_ref([GOOD], log_metric=m, prefered_images=[["ref.png"]], **cols(1))
    assert 0.0 <= out[0] <= 1.0 and m["rewards/pref_profile/img_fallback_rate"] == [0.0]


def test_diffusers_failure_falls_back_to_text(caplog):
    class Broken:
        def __call__(self, **kwargs):
            raise RuntimeError("CUDA out of memory")

    class Metric:
        def similarity(self, a, b):
            return [1.0] * len(a)

    pc = validate_reward_config({"names": ["pref_profile"], "weights": [1], "prediction": {"image_backend": "none"}}).prediction
    pc.w_img = 0.5
    scorer = ProfileScorer(pc, image_backend=DiffusersImageBackend(pipeline=Broken(), metric=Metric()))
    pref = ProfileReward("pref", pc, scorer=scorer)
    m = Metrics()
    wrong = GOOD.replace(profile_lines(PREF), profile_lines(WRONG))
    got = pref([GOOD, wrong], log_metric=m, **cols(2))
    assert got[0] == pytest.approx(1.0, abs=1e-4) and 0.0 < got[1] < 1.0  # text-only scores, no crash
    assert m["rewards/pref_profile/img_error"] == [1.0] and m["rewards/pref_profile/img_fallback_rate"] == [1.0]
    assert "image backend failed" in caplog.text


# ------------------------------------------------------------------------------------------------
# TRL shape, logging, report


def test_trl_shaped_call_conversational_and_plain(text_only):
    funcs, weights = build_rewards({"names": list(REWARDS), "weights": [1.0, 0.3, 0.35, 0.35, 0.2, 1.0, 1.0],
                                    "prediction": {"image_backend": "none"}})
    wrong = GOOD.replace("<answer>Image A", "<answer>Image B")
    plain = [GOOD, wrong, "nonsense"]
    conversational = [[{"role": "assistant", "content": t}] for t in plain]
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in plain]
    trl_kwargs = dict(prompts=[[{"role": "user", "content": "..."}]] * 3, completion_ids=[[1, 2]] * 3,
                      trainer_state=object(), log_extra=lambda column, values: None, images=[[]] * 3, **cols(3))
    for fn in funcs:
        m = Metrics()
        a = fn(plain, log_metric=m, **trl_kwargs)
        b = fn(conversational, log_metric=m, **trl_kwargs)
        c = fn(blocks, log_metric=m, **trl_kwargs)
        assert a == b == c and len(a) == 3, fn.__name__
        assert all(v is None or 0.0 <= v <= 1.0 for v in a)
        assert m, f"{fn.__name__} logged nothing"
    assert completion_text(None) == "" and completion_text([{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]) == "x\ny"


def test_logged_metric_names():
    m = Metrics()
    AccuracyReward()([GOOD], solution=["Image A"], log_metric=m)
    FormatReward()([GOOD], log_metric=m)
    ConsistencyReward()([GOOD], log_metric=m)
    assert {"rewards/accuracy/answer_accuracy", "rewards/format/format_rate", "rewards/format/official_regex_rate",
            "rewards/consistency/consistent_rate"} <= set(m)


def test_reward_report():
    wrong = GOOD.replace("<answer>Image A", "<answer>Image B")
    rep = reward_report([GOOD, wrong], **cols(2))
    assert rep["n"] == 2 and rep["accuracy"] == 0.5 and rep["format"] == 1.0 and rep["consistency"] == 0.5
    assert rep["pref_profile"] == pytest.approx(1.0, abs=1e-4) and "pref_profile/s_text" in rep
    assert rep["accuracy/answer_accuracy"] == 0.5


def test_user_reward_plugin_by_import_path():
    """reward.names may name a user reward as 'package.module:factory'; a bad path is a config error naming it."""
    from preferthinker.rewards import build_rewards

    funcs, weights = build_rewards({"names": ["accuracy", "tests.helpers:brevity"], "weights": [1.0, 0.5]})
    assert [f.__name__ for f in funcs] == ["accuracy", "brevity"] and weights == [1.0, 0.5]
    assert funcs[1]([[{"role": "assistant", "content": "x" * 50}]])[0] == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="no_such_module:fn"):
        build_rewards({"names": ["no_such_module:fn"], "weights": [1.0]})


def test_public_names_of_the_single_module_still_import():
    """The package re-exports every name the old preferthinker/rewards.py exported."""
    import preferthinker.rewards as rewards

    old = ["REWARDS", "AccuracyReward", "ConsistencyReward", "DiffusersImageBackend", "EmbeddingPerceptualMetric",
           "FormatReward", "ImageQuery", "PredictionConfig", "ProfileReward", "ProfileScorer", "RewardConfig",
           "SyntheticImageBackend", "build_rewards", "completion_text", "reward_report", "validate_reward_config",
           "DreamSimMetric", "load_perceptual_metric", "synthetic_image_similarity", "build_image_backend",
           "validate_prediction", "DEFAULT_MAX_CHARS", "MAX_PROFILE_CHARS", "IMAGE_BACKENDS", "DIFFUSERS_TARGETS"]
    assert [n for n in old if not hasattr(rewards, n)] == []
    assert set(rewards.__all__) <= set(dir(rewards))


def test_basic_rewards_are_plain_trl_functions():
    """accuracy/format/consistency are plain ``fn(completions, **kwargs)`` functions (TRL's trl/rewards shape);
    the registry's callables are the same functions with a configured max_chars."""
    from preferthinker.rewards import accuracy_reward, consistency_reward, format_reward

    wrong = GOOD.replace("<answer>Image A", "<answer>Image B")
    conv = [[{"role": "assistant", "content": t}] for t in (GOOD, wrong, "nonsense")]
    kw = dict(solution=["Image A"] * 3, prompts=[[]] * 3, trainer_state=None, completion_ids=[[1]] * 3)
    assert accuracy_reward(conv, **kw) == AccuracyReward()(conv, **kw) == [1.0, 0.0, 0.0]
    assert format_reward(conv, **kw) == FormatReward()(conv, **kw) == [1.0, 1.0, 0.0]
    assert consistency_reward(conv, **kw) == ConsistencyReward()(conv, **kw) == [1.0, 0.0, 0.0]
    assert format_reward(conv, max_chars=100, **kw) == FormatReward(max_chars=100)(conv, **kw) == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="max_chars must be a positive integer"):
        AccuracyReward(max_chars=0)


def test_reward_knobs_override_without_plus_and_typos_are_refused():
    """Presets start from reward/schema (the RewardConfig dataclass): a knob a preset does not state is
    overridden as usual, with its default otherwise, and a misspelt key stops composition naming it."""
    from hydra.errors import ConfigCompositionException

    from tests.conftest import compose

    cfg = compose("grpo", ["reward=acc_format", "reward.prediction.w_img=0.7"])
    assert cfg.reward.prediction.w_img == 0.7 and cfg.reward.prediction.w_text == 0.5  # dataclass default
    assert list(cfg.reward.names) == ["accuracy", "format"]
    with pytest.raises(ConfigCompositionException, match="reward.prediction.w_imgg"):
        compose("grpo", ["reward.prediction.w_imgg=0.7"])
