"""Batched greedy generation from chat messages: the one decoding path of evaluation and the Assessor.

Two engines give the same greedy tokens (tested in fp32; bf16 rounding can flip near-ties):

* ``hf``: ``model.generate`` on a left-padded batch (supports ``repetition_penalty`` and sampling);
* ``fast``: ``preferthinker.rollout.FastRollout`` greedy decoding over a preallocated static KV cache, with the
  per-token step compiled into a CUDA graph on GPUs (``compile``), i.e. one kernel-graph replay per token
  instead of dozens of small launches per layer; greedy only, repetition penalty included.

``engine="auto"`` takes ``fast`` for greedy decoding on any device, ``hf`` for sampling. On the 2-core CPU the
fast engine gives the tiny default 5.44 samples/s against ``hf``'s 4.53 with the same tokens
(``benchmarks/cpu_time_split.py``, docs/benchmarks.md): no per-step cache growth or generation-config overhead.

``Generator.answer_logodds`` scores what was generated: one teacher-forced forward over prompt + response
up to ``<answer>`` gives log P(answer token of "Image A") - log P(that of "Image B"), the model's own
confidence in its verdict, engine-independent (the calibrator of ``preferthinker.calibration`` reads it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from preferthinker.response import ANSWERS

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 1024
    repetition_penalty: float = 1.0  # official eval: 1.15 (for the released 7B checkpoint)
    do_sample: bool = False  # official protocol: greedy
    temperature: float = 1.0
    batch_size: int = 8
    engine: str = "auto"  # auto | hf | fast (see the module docstring)
    compile: bool | None = None  # fast engine: CUDA-graph the decode step (None: on CUDA)
    min_new_tokens: int = 0  # benchmarks only: force every sample to its full length (EOS blocked before)
    vision_ids: bool = False  # add_vision_id: "Picture N: " before each image (the official eval script's prompt)


class Generator:
    """Wraps a loaded model + processor. ``generate(list_of_messages) -> list_of_texts``.

    Messages carry their images inline (``{"type": "image", "image": PIL}``), as
    ``prompting.build_messages(..., embed_images=True)`` writes them. Left padding keeps every prompt
    flush against its continuation, so batched and one-by-one greedy decoding agree.
    """

    def __init__(self, model, processor, settings: GenerationSettings | None = None):
        self.model = model.eval()
        self.processor = processor
        self.settings = settings or GenerationSettings()
        tok = processor.tokenizer
        tok.padding_side = "left"
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
        # never emit vision placeholders as text (TRL does the same for VLM rollouts)
        self.suppress = [t for t in (image_pad, tok.convert_tokens_to_ids("<|video_pad|>")) if isinstance(t, int) and t >= 0]
        self.engine = self._pick_engine()
        self._fast = None
        # encode() may run on a prefetch thread while decode_batch() runs here: the Rust tokenizer must not be
        # entered from two threads at once ("Already borrowed" when padding settings change under a reader).
        self._tok_lock = threading.Lock()

    def _pick_engine(self) -> str:
        s = self.settings
        if s.engine not in ("auto", "hf", "fast"):
            raise ValueError(f"generation engine must be auto, hf or fast, got {s.engine!r}")
        if s.engine == "fast" and s.do_sample:
            raise ValueError("the fast engine decodes greedily (the official protocol); use engine=hf to sample")
        if s.engine == "auto":
            return "hf" if s.do_sample else "fast"
        return s.engine

    def _fast_rollout(self):
        if self._fast is None:
            from preferthinker.rollout import FastRollout

            s = self.settings
            compile_ = self.device.type == "cuda" if s.compile is None else bool(s.compile)
            self._fast = FastRollout(self.model, self.processor, max_new_tokens=int(s.max_new_tokens), static_cache=True,
                                     compile=compile_, pad_token_id=self.pad_id, suppress_tokens=self.suppress,
                                     min_new_tokens=int(s.min_new_tokens), repetition_penalty=float(s.repetition_penalty))
        return self._fast

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, batch: Sequence[list[dict]]) -> dict:
        """Tokenise and patchify one batch (left padded). On CUDA the image processor runs on the GPU
        (resize, normalise and patchify of ~100 images of 448 px take seconds on the CPU)."""
        kw = {"padding": True, "padding_side": "left"}
        if self.device.type == "cuda":
            kw["device"] = str(self.device)
        with self._tok_lock:
            inputs = self.processor.apply_chat_template(
                list(batch), tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True, processor_kwargs=kw,
                add_vision_id=self.settings.vision_ids,
            )
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    @torch.inference_mode()
    def decode_batch(self, inputs: dict) -> list[str]:
        """Greedy (or sampled) continuations of one encoded batch, as raw text."""
        s = self.settings
        if self.engine == "fast":
            ids, _, mask = self._fast_rollout().generate(inputs, num_generations=1, greedy=True)
            new = ids * mask + self.pad_id * (1 - mask)
        else:
            kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, repetition_penalty=s.repetition_penalty,
                          pad_token_id=self.pad_id, suppress_tokens=self.suppress or None, min_new_tokens=s.min_new_tokens or None)
            if s.do_sample:
                kwargs["temperature"] = s.temperature
            new = self.model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
        with self._tok_lock:
            return self.processor.batch_decode(new, skip_special_tokens=True)  # raw: the format check must see exactly what the model wrote

    def generate(self, batch: Sequence[list[dict]]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(batch), self.settings.batch_size):
            out += self.decode_batch(self.encode(batch[i : i + self.settings.batch_size]))
        return out

    def generate_scored(self, batch: Sequence[list[dict]], progress: str | None = None) -> list[tuple[str, float | None]]:
        """``generate`` plus each response's answer log-odds (``answer_logodds``), batch by batch;
        ``progress``: a label for a tqdm bar over the prompts (None: no bar)."""
        from tqdm.auto import tqdm

        out: list[tuple[str, float | None]] = []
        bs = self.settings.batch_size
        with tqdm(total=len(batch), desc=progress, unit="prompt", disable=progress is None or len(batch) <= bs) as bar:
            for i in range(0, len(batch), bs):
                inputs = self.encode(batch[i : i + bs])
                texts = self.decode_batch(inputs)
                out += list(zip(texts, self.answer_logodds(inputs, texts), strict=True))
                bar.update(len(texts))
        return out

    def _answer_tokens(self) -> tuple[list[int], int, int]:
        """(shared ids, id for A, id for B): where the tokenisations of the two answers first differ.
        Found from the tokenizer rather than assumed, since "Image A</answer>" may merge differently
        in the tiny locally-trained tokenizer and in Qwen's."""
        tok = self.processor.tokenizer
        with self._tok_lock:
            ids_a = tok(f"{ANSWERS[0]}</answer>", add_special_tokens=False)["input_ids"]
            ids_b = tok(f"{ANSWERS[1]}</answer>", add_special_tokens=False)["input_ids"]
        k = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
        return list(ids_a[:k]), int(ids_a[k]), int(ids_b[k])

    @torch.inference_mode()
    def answer_logodds(self, inputs: dict, texts: Sequence[str]) -> list[float | None]:
        """log P(A) - log P(B) of the answer token, for each response of an encoded batch.

        The prompt (``inputs`` as ``encode`` returned it) is followed by the response text up to its last
        ``<answer>`` and the tokens both answers share ("Image"); one forward pass reads the next-token
        distribution there. None where the response has no ``<answer>`` tag (nothing to score)."""
        shared, tok_a, tok_b = self._answer_tokens()
        tok = self.processor.tokenizer
        rows, where = [], []
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        for r, text in enumerate(texts):
            cut = (text or "").rfind("<answer>")
            if cut < 0:
                continue
            with self._tok_lock:
                prefix = tok(text[: cut + len("<answer>")], add_special_tokens=False)["input_ids"]
            rows.append(ids[r][mask[r].bool()].tolist() + list(prefix) + shared)
            where.append(r)
        out: list[float | None] = [None] * len(texts)
        if not rows:
            return out
        width = max(map(len, rows))  # left padding: every row's last position is the answer slot
        new_ids = torch.full((len(texts), width), self.pad_id, dtype=ids.dtype)
        new_mask = torch.zeros((len(texts), width), dtype=mask.dtype)
        for r, row in zip(where, rows, strict=True):
            new_ids[r, width - len(row):] = torch.tensor(row, dtype=ids.dtype)
            new_mask[r, width - len(row):] = 1
        for r in set(range(len(texts))) - set(where):  # rows without an answer keep their prompt (images must still line up)
            row = ids[r][mask[r].bool()]
            new_ids[r, width - len(row):] = row
            new_mask[r, width - len(row):] = 1
        extra = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_grid_thw")}
        if "mm_token_type_ids" in inputs:  # image-token markers (rope positions): the appended text is type 0
            types = torch.zeros_like(new_ids)
            for r in range(len(texts)):
                row = inputs["mm_token_type_ids"][r][mask[r].bool()].cpu()
                types[r, width - int(new_mask[r].sum()): width - int(new_mask[r].sum()) + len(row)] = row
            extra["mm_token_type_ids"] = types.to(self.device)
        logits = self.model(input_ids=new_ids.to(self.device), attention_mask=new_mask.to(self.device), **extra,
                            logits_to_keep=1).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        for r in where:
            out[r] = float(logp[r, tok_a] - logp[r, tok_b])
        return out
