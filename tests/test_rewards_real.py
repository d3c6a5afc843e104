"""Tests of reward=paper_real: the released prediction reward on real data (issue #22).

s_img = metric( T2I(reference_prompt_list[0] + predicted profile string), first reference image of the side ),
with the reference image read from the record's path below the dataset's image root. Offline and on CPU:
the T2I model is a tiny random Stable-Diffusion-shaped pipeline saved to tmp (``tiny_t2i`` from
test_rewards.py), the metric the embedding fallback on a tiny random ViT.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from preferthinker.rewards import (
    DiffusersBackendConfig,
    DiffusersImageBackend,
    EmbeddingPerceptualMetric,
    ImageBackendLoadError,
    PredictionConfig,
    ProfileReward,
    ProfileScorer,
    build_rewards,
    resolve_device,
    validate_reward_config,
)
from preferthinker.response import render_response
from preferthinker.runtime import ConfigError
from preferthinker.similarity import clean_profile_text
from tests.conftest import CONFIGS, compose
from tests.test_rewards import GOOD, Metrics, cols, tiny_t2i  # noqa: F401  (tiny_t2i: a fixture)


class Recorder:
    """Wraps a pipeline or a metric and records what it was asked."""

    def __init__(self, inner):
        self.inner, self.prompts, self.targets = inner, [], []

    def __call__(self, **kwargs):  # pipeline
        self.prompts.extend(kwargs["prompt"])
        return self.inner(**kwargs)

    def similarity(self, images_a, images_b):  # metric
        self.targets.extend(np.asarray(im.convert("RGB")) for im in images_b)
        return self.inner.similarity(images_a, images_b)


class SolidPipeline:
    """A stand-in T2I pipeline: one grey image per prompt."""

    def __call__(self, prompt, **kwargs):
        from PIL import Image

        return type("Out", (), {"images": [Image.new("RGB", (32, 32), (128, 128, 128)) for _ in prompt]})()


class ConstMetric:
    def similarity(self, a, b):
        return [0.25] * len(a)


def paper_real_reward(tiny_t2i, *extra: str):
    """The pref/nonpref rewards of the composed GRPO config with reward=paper_real (tiny local models)."""
    cfg = compose("grpo", ["reward=paper_real", f"reward.prediction.diffusers.pipeline_path={tiny_t2i / 'pipe'}",
                           f"reward.prediction.diffusers.metric_path={tiny_t2i / 'metric'}",
                           "reward.prediction.diffusers.size=32", "reward.prediction.diffusers.steps=1", *extra])
    return build_rewards(cfg.reward)


# ------------------------------------------------------------------------------------------------
# the preset and the one source of defaults


def test_paper_real_preset_is_the_released_computation():
    cfg = compose("grpo", ["reward=paper_real"])
    with pytest.raises(ConfigError, match=r"diffusers.pipeline_path is required"):
        build_rewards(cfg.reward)  # no silent hub download: the local folders must be given
    pred = validate_reward_config({**dict(cfg.reward), "prediction": {**dict(cfg.reward.prediction), "image_backend": "none"}}).prediction
    d = pred.diffusers
    assert list(cfg.reward.names) == ["accuracy", "format", "pref_profile", "nonpref_profile"]
    assert sum(cfg.reward.weights) == pytest.approx(2.0)
    assert cfg.reward.prediction.image_backend == "diffusers"
    assert (d.target, d.separator) == ("reference_image", "")  # first reference image; prompt + profile, no separator
    assert (d.steps, d.size, d.guidance, d.seed) == (4, 512, 0.0, 1024)  # FLUX.1-schnell as the released server ran it
    assert (pred.w_text, pred.w_img, pred.text_model) == (0.5, 0.5, None)  # SBERT branch: bundled all-MiniLM-L6-v2
    # a hub id is not a folder: refused at start-up, naming the key
    with pytest.raises(ConfigError, match=r"pipeline_path=black-forest-labs/FLUX.1-schnell: no such folder"):
        build_rewards(compose("grpo", ["reward=paper_real", "reward.prediction.diffusers.pipeline_path=black-forest-labs/FLUX.1-schnell",
                                       "reward.prediction.diffusers.metric_path=/tmp"]).reward)


def test_presets_do_not_restate_defaults():
    """configs/reward/*.yaml hold only the presets' choices: the defaults live in rewards/config.py."""
    defaults = {"prediction": PredictionConfig(), "synthetic": PredictionConfig().synthetic, "diffusers": DiffusersBackendConfig()}
    visible = {"image_backend", "pipeline_path", "metric_path"}  # a preset's identity / its required inputs
    for path in sorted((CONFIGS / "reward").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        assert "max_chars" not in data, path.name
        sections = [("prediction", data.get("prediction") or {})]
        sections += [(k, v) for k, v in sections[0][1].items() if isinstance(v, dict)]
        for name, section in sections:
            for key, value in section.items():
                if isinstance(value, dict) or key in visible:
                    continue
                assert value != getattr(defaults[name], key), f"{path.name}: {name}.{key}={value!r} restates the default"
    assert DiffusersBackendConfig().device == "auto"
    backend = DiffusersImageBackend(pipeline=SolidPipeline(), metric=ConstMetric())
    assert backend.device == resolve_device("auto") and backend.cfg.steps == DiffusersBackendConfig().steps


# ------------------------------------------------------------------------------------------------
# the computation, end to end from the records


@pytest.mark.slow  # builds a tiny diffusers pipeline and runs it (a few seconds)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_paper_real_prompt_and_target_from_the_records(tiny_t2i, mini_data):
    """GRPO rows (build_examples) -> the rewards: the T2I prompt is exactly reference_prompt_list[0] + the
    cleaned predicted profile, and the comparison target is the record's first preferred (non-preferred)
    image, loaded from its path below the dataset's image root."""
    from PIL import Image

    from preferthinker.data.loading import PromptSpec, build_examples, image_root_for
    from preferthinker.data.schema import load_train_jsonl

    path = mini_data / "train" / "grpo.jsonl"
    root = image_root_for(path, None)
    records = load_train_jsonl(path, root)[:2]
    rows = build_examples(records, root, PromptSpec(style="compact", system="compact"), kind="grpo")
    columns = {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "images")}  # as TRL passes them
    # the GRPO file has no responses: answer with the records' own profiles
    completions = [[{"role": "assistant", "content": render_response(rec.prefer_attributes, rec.non_prefer_attributes,
                                                                     [4, 5, 4, 4, 4], [2, 1, 2, 2, 2])}] for rec in records]

    funcs, _ = paper_real_reward(tiny_t2i)
    pref, nonpref = funcs[2:]
    backend = pref.scorer.image_backend
    assert nonpref.scorer.image_backend is backend and isinstance(backend, DiffusersImageBackend)
    backend._pipe = Recorder(backend._pipeline())
    backend._metric = Recorder(backend._metric_obj())

    for reward, side, refs in ((pref, "prefer_attributes", "preferred"), (nonpref, "non_prefer_attributes", "non_preferred")):
        backend._pipe.prompts.clear(), backend._metric.targets.clear(), backend._cache.clear()
        m = Metrics()
        got = reward(completions, log_metric=m, **columns)
        expected_prompts = [rec.reference_prompt_list[0] + clean_profile_text(getattr(rec, side)) for rec in records]
        assert backend._pipe.prompts == expected_prompts  # e.g. "scene 0art styles: minimalism, color: crimson, ..."
        assert expected_prompts[0].startswith("scene 0art styles: minimalism")
        for rec, target in zip(records, backend._metric.targets, strict=True):
            want, second = (np.asarray(Image.open(root / p).convert("RGB")) for p in getattr(rec, refs)[:2])
            assert np.array_equal(target, want) and not np.array_equal(target, second)  # the file's own pixels (56 px)
        # s_img is the perceptual metric of exactly those two images; r = (s_text + s_img) / 2
        metric = EmbeddingPerceptualMetric(tiny_t2i / "metric", device="cpu")
        rendered = backend.render(expected_prompts)
        s_img = metric.similarity(rendered, [Image.open(root / getattr(rec, refs)[0]) for rec in records])
        key = f"rewards/{reward.__name__}"
        assert m[f"{key}/s_img"] == [pytest.approx(float(np.mean(s_img)), abs=1e-5)]
        assert m[f"{key}/s_text"] == [pytest.approx(1.0, abs=1e-4)]  # the teacher's profiles are the gold ones
        assert got == [pytest.approx(0.5 * 1.0 + 0.5 * s, abs=1e-4) for s in s_img]
        assert m[f"{key}/img_fallback_rate"] == [0.0] and m[f"{key}/ref_missing_rate"] == [0.0]


# ------------------------------------------------------------------------------------------------
# failures: counted, or stopped with a reason; never silent


def _reward_with(backend: DiffusersImageBackend, side: str = "pref") -> ProfileReward:
    pc = PredictionConfig(image_backend="none")
    pc.w_img = 0.5  # the scorer gets its backend object directly
    return ProfileReward(side, pc, scorer=ProfileScorer(pc, image_backend=backend))


def test_bad_reference_images_fall_back_to_text_and_are_counted(tmp_path, caplog):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "ok.png")
    Image.new("RGB", (32, 32), (0, 0, 0)).save(tmp_path / "outside.png")
    (root / "corrupt.png").write_bytes(b"not a png at all")
    pref = _reward_with(DiffusersImageBackend(pipeline=SolidPipeline(), metric=ConstMetric(), target="reference_image", separator="", size=32))
    refs = [["ok.png"], ["../outside.png"], ["missing.png"], ["corrupt.png"], ["ok.png"]]
    roots = [str(root)] * 4 + [None]  # the last row has no image root at all
    m = Metrics()
    with caplog.at_level(logging.WARNING, logger="preferthinker.rewards"):
        got = pref([GOOD] * 5, log_metric=m, **cols(5, prefered_images=refs, image_root=roots))
    assert got[0] == pytest.approx(0.5 * 1.0 + 0.5 * 0.25, abs=1e-4)
    assert got[1:] == [pytest.approx(1.0, abs=1e-4)] * 4  # text-only (s_text = 1), never a crash
    assert m["rewards/pref_profile/ref_missing_rate"] == [pytest.approx(4 / 5)]
    assert m["rewards/pref_profile/img_fallback_rate"] == [pytest.approx(4 / 5)]
    text = caplog.text
    assert "row 1 prefered_images[0]" in text and "outside the image root" in text
    assert "row 2 prefered_images[0]" in text and "does not exist" in text
    assert "row 3 prefered_images[0]" in text and "cannot read" in text
    assert "row 4 prefered_images[0]" in text and "no image root" in text


def test_t2i_failure_at_generation_is_counted_and_at_load_stops_the_run(tmp_path, caplog):
    pytest.importorskip("diffusers")

    class OOM:
        def __call__(self, **kwargs):
            raise RuntimeError("CUDA out of memory")

    pref = _reward_with(DiffusersImageBackend(pipeline=OOM(), metric=ConstMetric(), target="reference_image", separator=""))
    m = Metrics()
    from PIL import Image

    img = Image.new("RGB", (32, 32))
    got = pref([GOOD], log_metric=m, **cols(1, prefered_images=[[img]]))
    assert got == [pytest.approx(1.0, abs=1e-4)]  # text-only for the batch ...
    assert m["rewards/pref_profile/img_error"] == [1.0]  # ... and counted
    assert "image backend failed (RuntimeError: CUDA out of memory)" in caplog.text

    broken = tmp_path / "broken_pipe"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ not json")
    pref = _reward_with(DiffusersImageBackend(pipeline_path=str(broken), metric=ConstMetric(), device="cpu"))
    with pytest.raises(ImageBackendLoadError, match=r"pipeline_path=.*broken_pipe: cannot load the text-to-image pipeline"):
        pref([GOOD], **cols())  # a model that cannot load is a setup error: it must not train text-only in silence
    assert issubclass(ImageBackendLoadError, ConfigError)  # run_entry prints it as one paragraph, exit code 2
