"""FastRollout on the tiny Qwen2.5-VL against the plain path: greedy tokens equal ``model.generate``'s, per-token
log-probs equal a teacher-forced forward over prompt + completion, seeded sampling is reproducible, and the
static-cache and dynamic-cache decoders agree."""

from __future__ import annotations

import pytest
import torch

from preferthinker.rollout import FastRollout

T = 20  # new tokens per sample


@pytest.fixture(scope="module")
def setup(tiny_model, mini_data):
    from preferthinker.data.loading import PromptSpec, sample_inputs
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.modeling import load_model_and_processor

    model, proc = load_model_and_processor(tiny_model, padding_side="left")
    recs = load_train_jsonl(mini_data / "train" / "grpo.jsonl")
    root = mini_data / "train" / "images"
    spec8 = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)  # 3+3 refs + A, B
    spec6 = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136, max_refs=2)
    msgs_a, imgs_a = sample_inputs(recs[0], root, spec8, embed_images=True)
    msgs_b, imgs_b = sample_inputs(recs[1], root, spec6, embed_images=True)
    assert len(imgs_a) == 8 and len(imgs_b) == 6

    def enc(msgs, **kw):
        return proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt",
                                        add_generation_prompt=True, **kw)

    enc_a, enc_b = enc(msgs_a), enc(msgs_b)
    enc_ab = enc([msgs_a, msgs_b], padding=True)
    assert enc_ab["attention_mask"][1].sum() < enc_ab["attention_mask"][0].sum()  # the second row is left-padded
    refs = {"a": _reference(model, enc_a), "b": _reference(model, enc_b), "ab": _reference(model, enc_ab)}
    return model, proc, enc_a, enc_b, enc_ab, refs


def _reference(model, enc, n=T):
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n)
    return out[:, enc["input_ids"].shape[1]:]


def _teacher_forced_logps(model, enc, completion, temperature=1.0):
    """log_softmax(logits / T) of each completion token under one full forward over prompt + completion (what
    GRPO's loss recomputes), for a single-prompt ``enc`` and completions [G, C]."""
    g = completion.shape[0]
    ids = torch.cat([enc["input_ids"].repeat(g, 1), completion], 1)
    am = torch.ones_like(ids)
    kw = {"pixel_values": enc["pixel_values"].repeat(g, 1), "image_grid_thw": enc["image_grid_thw"].repeat(g, 1),
          "mm_token_type_ids": torch.cat([enc["mm_token_type_ids"].repeat(g, 1), torch.zeros_like(completion)], 1)}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am, **kw).logits.float()
    p = enc["input_ids"].shape[1]
    logp = torch.log_softmax(logits[:, p - 1:-1] / temperature, -1)
    return logp.gather(-1, completion[..., None]).squeeze(-1)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("g", [1, 4])
def test_greedy_tokens_equal_generate(setup, static, g):
    model, proc, enc_a, _, _, refs = setup
    ref = refs["a"]
    fr = FastRollout(model, proc, max_new_tokens=T, static_cache=static)
    ids, logps, mask = fr.generate(enc_a, num_generations=g, greedy=True)
    assert ids.shape == (g, ref.shape[1])
    assert torch.equal(ids, ref.expand(g, -1))
    assert fr.last_stats["prompts"] == 1 and fr.last_stats["num_generations"] == g  # one prefill for the G rows
    assert mask.dtype in (torch.int32, torch.int64) and logps.shape == ids.shape


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_greedy_batch_of_two_different_prompts(setup, static):
    model, proc, enc_a, enc_b, enc_ab, refs = setup
    ref, ref_b = refs["ab"], refs["b"]
    fr = FastRollout(model, proc, max_new_tokens=T, static_cache=static)
    ids, logps, mask = fr.generate(enc_ab, num_generations=2, greedy=True)
    assert ids.shape == (4, ref.shape[1])
    assert torch.equal(ids[0::2], ref) and torch.equal(ids[1::2], ref)  # rows grouped per prompt
    # the left-padded batch gives what each prompt gives alone
    assert torch.equal(ref[1, : ref_b.shape[1]], ref_b[0, : ref.shape[1]])


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_logprobs_equal_teacher_forced_forward(setup, static, greedy):
    model, proc, enc_a, enc_b, enc_ab, _ = setup
    temperature = 1.0 if greedy else 0.7
    fr = FastRollout(model, proc, max_new_tokens=T, temperature=temperature, static_cache=static)
    ids, logps, mask = fr.generate(enc_ab, num_generations=2, greedy=greedy, seed=11)
    for i, enc in enumerate((enc_a, enc_b)):
        rows = slice(2 * i, 2 * i + 2)
        tf = _teacher_forced_logps(model, enc, ids[rows], temperature)
        m = mask[rows].bool()
        assert m[:, 0].all()
        torch.testing.assert_close(logps[rows][m], tf[m], atol=1e-4, rtol=0)
        assert (logps[rows][~m] == 0).all()


def test_sampling_reproducible_with_seed(setup):
    model, proc, enc_a, _, enc_ab, _ = setup
    fr = FastRollout(model, proc, max_new_tokens=T, temperature=1.0, static_cache=True)
    a = fr.generate(enc_ab, num_generations=3, seed=123)
    b = fr.generate(enc_ab, num_generations=3, seed=123)
    c = fr.generate(enc_ab, num_generations=3, seed=124)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids[:, :5], c.completion_ids[:, :5])
    # the G samples of one prompt are distinct draws, not copies
    assert len({tuple(r[:5].tolist()) for r in a.completion_ids[:3]}) > 1


def test_static_and_dynamic_cache_agree(setup):
    model, proc, _, _, enc_ab, _ = setup
    out = {}
    for static in (True, False):
        fr = FastRollout(model, proc, max_new_tokens=T, temperature=1.0, top_p=0.95, top_k=50, static_cache=static)
        out[static] = fr.generate(enc_ab, num_generations=3, seed=5)
    assert torch.equal(out[True].completion_ids, out[False].completion_ids)
    assert torch.equal(out[True].mask, out[False].mask)
    torch.testing.assert_close(out[True].logprobs, out[False].logprobs, atol=1e-5, rtol=0)


def test_eos_masking_min_new_tokens_and_top_k1(setup):
    model, proc, enc_a, _, _, refs = setup
    eos = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = proc.tokenizer.pad_token_id
    fr = FastRollout(model, proc, max_new_tokens=T, temperature=1.5, static_cache=True)
    ids, logps, mask = fr.generate(enc_a, num_generations=8, seed=0)
    assert fr.eos_ids[0] == eos
    for row, m in zip(ids, mask):
        n = int(m.sum())
        if n < ids.shape[1] or row[n - 1] == eos:
            assert row[n - 1] == eos and (row[:n - 1] != eos).all() and (row[n:] == pad).all()
    assert ids.shape[1] == int(mask.sum(1).max())  # trimmed to the longest completion
    # EOS blocked for min_new_tokens: every row runs to the end
    fr = FastRollout(model, proc, max_new_tokens=T, temperature=1.5, static_cache=True, min_new_tokens=T)
    ids, _, mask = fr.generate(enc_a, num_generations=8, seed=0)
    assert mask.all() and ids.shape[1] == T and not (ids == eos).any()
    # top_k=1 sampling is greedy decoding
    fr = FastRollout(model, proc, max_new_tokens=T, top_k=1, static_cache=True)
    assert torch.equal(fr.generate(enc_a, num_generations=2, seed=9).completion_ids, refs["a"].expand(2, -1))


def test_suppressed_token_never_sampled_and_model_state_restored(setup):
    model, proc, enc_a, _, _, refs = setup
    was = model.training
    model.train()
    ref = refs["a"]
    banned = int(ref[0, 0])
    fr = FastRollout(model, proc, max_new_tokens=T, static_cache=True, suppress_tokens=[banned])
    ids, _, _ = fr.generate(enc_a, num_generations=2, greedy=True)
    assert not (ids == banned).any()
    assert model.training  # restored after the rollout (which runs in eval mode)
    configs = fr._language_model_configs()
    assert configs and all(c._attn_implementation == "sdpa" for c in configs)  # decode attention switched back
    model.train(was)


@pytest.mark.slow
def test_compiled_decode_step_is_one_graph_and_exact(setup, monkeypatch):
    """The step that CUDA runs under ``torch.compile(mode="reduce-overhead")`` traces as a single graph (dynamo with
    ``fullgraph=True`` and a backend that records what it is handed, so no compiler is needed on CPU), that one graph
    serves every decode step of both calls (no recompilation), and it samples exactly what the plain step does."""
    model, proc, enc_a, _, _, _ = setup
    ref = FastRollout(model, proc, max_new_tokens=8, static_cache=True).generate(enc_a, num_generations=2, seed=4)
    original = torch.compile
    requested: list[dict] = []
    graphs: list = []
    runs = [0]

    def recording_backend(gm, example_inputs):
        graphs.append(gm)

        def run(*args):
            runs[0] += 1
            return gm.forward(*args)
        return run

    def compile_recording(fn, **kw):
        requested.append(kw)
        return original(fn, backend=recording_backend, fullgraph=True, dynamic=False)

    monkeypatch.setattr(torch, "compile", compile_recording)
    torch._dynamo.reset()
    fr = FastRollout(model, proc, max_new_tokens=8, static_cache=True, compile=True, check_every=100)
    fr._use_compile = lambda: fr.compile  # CPU: exercise the compiled path anyway
    for _ in range(2):  # the second call reuses the compiled step and the static cache
        out = fr.generate(enc_a, num_generations=2, seed=4)
        assert fr.compile_error is None
        assert torch.equal(out.completion_ids, ref.completion_ids)
        torch.testing.assert_close(out.logprobs, ref.logprobs, atol=1e-5, rtol=0)
    assert requested == [{"mode": "reduce-overhead", "dynamic": False}]  # compiled once, as CUDA graphs would be
    assert len(graphs) == 1  # one graph for the whole step (fullgraph=True would have raised on a break), no recompile
    assert runs[0] == 2 * 7  # every decode step after the prefill's token, in both calls, ran that graph
    torch._dynamo.reset()


def test_compile_failure_falls_back_without_losing_the_rollout(setup, monkeypatch):
    model, proc, enc_a, _, _, refs = setup

    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("simulated compiler failure")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    fr = FastRollout(model, proc, max_new_tokens=T, static_cache=True, compile=True)
    fr._use_compile = lambda: fr.compile
    ids, _, _ = fr.generate(enc_a, num_generations=2, greedy=True)
    assert torch.equal(ids, refs["a"].expand(2, -1))
    assert fr.compile is False and "simulated compiler failure" in fr.compile_error and "cudagraphs" in fr.compile_error
