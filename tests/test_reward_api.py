"""PersonalReward (one float per generated image, group or anchor mode, batched) and make_dpo_pairs
(chosen/rejected JSONL), with the scripted generator of test_assess (the redder candidate wins, log-odds
+-2) for the arithmetic and the real tiny model for the plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preferthinker import PersonalReward, make_dpo_pairs
from preferthinker.assess import AssessInputError, Assessor
from tests.test_assess import MAX_NEW, make_checkpoint, scripted, solid

P_WIN = 1 / (1 + np.exp(-2))  # both orders agree with answer log-odds +-2 (uncalibrated)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model):
    return make_checkpoint(tiny_model, tmp_path_factory.mktemp("reward_run"))


@pytest.fixture
def fake(ckpt) -> Assessor:
    return scripted(Assessor.from_pretrained(ckpt, device="cpu", max_new_tokens=MAX_NEW))


REFS = ([solid((250, 0, 0))], [solid((0, 0, 250))])


def test_group_reward_orders_images_and_counts_generations(fake):
    calls = []
    inner = fake.generator.generate_scored

    def counting(batch, progress=None):
        calls.append(len(batch))
        return inner(batch)

    fake.generator.generate_scored = counting
    reward = PersonalReward(fake, *REFS)
    images = [solid((0, 0, 0)), solid((250, 0, 0)), solid((120, 0, 0))]
    r = reward(images)
    assert len(r) == 3 and r[1] == pytest.approx(P_WIN) and r[0] == pytest.approx(1 - P_WIN) and r[2] == pytest.approx(0.5)
    assert calls == [6]  # one batched call: 3 pairs x 2 orders
    near = PersonalReward(fake, *REFS, opponents=1)
    assert len(near.pairs(5, 0)) == 5 and len(reward.pairs(5, 0)) == 10
    assert near(images) == pytest.approx(r)  # with 3 images, 1 neighbour each already covers every pair


def test_anchor_reward_is_comparable_across_calls(fake):
    reward = PersonalReward(fake, *REFS, anchors=[solid((120, 0, 0))])
    assert reward([solid((250, 0, 0))]) == pytest.approx([P_WIN])
    assert reward([solid((0, 0, 0)), solid((250, 0, 0))]) == pytest.approx([1 - P_WIN, P_WIN])
    assert reward([]) == []


def test_reward_input_errors(fake):
    with pytest.raises(AssessInputError, match="one image has no opponent"):
        PersonalReward(fake, *REFS)([solid((1, 0, 0))])
    with pytest.raises(AssessInputError, match="opponents must be >= 1"):
        PersonalReward(fake, *REFS, opponents=0)
    with pytest.raises(AssessInputError, match="need at least one disliked reference"):
        PersonalReward(fake, REFS[0], [])


def test_dpo_pairs_keep_confident_pairs(fake, tmp_path):
    folder = tmp_path / "cands"
    folder.mkdir()
    for k, red in enumerate((0, 250, 120)):
        solid((red, 0, 0)).save(folder / f"c{k}.png")
    out = tmp_path / "pairs.jsonl"
    recs = make_dpo_pairs(PersonalReward(fake, *REFS), folder, out, caption="a red poster")
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert lines == recs and len(recs) == 3  # every pair at P = sigmoid(2) = 0.88 >= 0.6
    best = str(folder / "c1.png")
    assert {r["rejected"] for r in recs if r["chosen"] == best} == {str(folder / "c0.png"), str(folder / "c2.png")}
    assert all(r["label_0"] == 1 and r["jpg_0"] == r["chosen"] and r["caption"] == "a red poster" for r in recs)
    assert make_dpo_pairs(fake, folder, out, liked=REFS[0], disliked=REFS[1], min_probability=0.95) == []
    with pytest.raises(AssessInputError, match="min_probability"):
        make_dpo_pairs(fake, folder, out, liked=REFS[0], disliked=REFS[1], min_probability=1.5)
    with pytest.raises(AssessInputError, match="needs liked= and disliked="):
        make_dpo_pairs(fake, folder, out)


def test_real_model_reward_is_a_probability_per_image(ckpt, mini_data):
    d = mini_data / "data" / "SP_ID" / "images"
    reward = PersonalReward(ckpt, [d / "SP_ID0_p0.png"], [d / "SP_ID0_n0.png"], device="cpu", max_new_tokens=MAX_NEW)
    r = reward([d / "SP_ID0_good.png", d / "SP_ID0_bad.png"])
    assert len(r) == 2 and all(0 <= x <= 1 for x in r) and r[0] + r[1] == pytest.approx(1.0, abs=1e-6)
    assert len(reward.last_comparisons) == 2


@pytest.mark.slow
def test_worked_example_runs_offline(ckpt, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "ex"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "personal_reward_synthetic.py"), "--model", str(ckpt), "--out", str(out),
                           "--n", "3", "--device", "cpu", "--max-new-tokens", "8"], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "rewards.json").read_text())
    assert len(doc["reward"]) == 3 and all(0 <= r <= 1 for r in doc["reward"]) and "best of N" in proc.stdout
    assert (out / "dpo_pairs.jsonl").is_file() and len(list((out / "user").glob("*.png"))) == 6
