"""Batched greedy generation from chat messages: the one decoding path of evaluation and the Assessor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 1024
    repetition_penalty: float = 1.0  # official eval: 1.15 (for the released 7B checkpoint)
    do_sample: bool = False  # official protocol: greedy
    temperature: float = 1.0
    batch_size: int = 8


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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, batch: Sequence[list[dict]]) -> dict:
        inputs = self.processor.apply_chat_template(
            list(batch), tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True,
            processor_kwargs={"padding": True, "padding_side": "left"},
        )
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    @torch.inference_mode()
    def generate(self, batch: Sequence[list[dict]]) -> list[str]:
        s = self.settings
        out: list[str] = []
        for i in range(0, len(batch), s.batch_size):
            inputs = self.encode(batch[i : i + s.batch_size])
            kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, repetition_penalty=s.repetition_penalty,
                          pad_token_id=self.pad_id, suppress_tokens=self.suppress or None)
            if s.do_sample:
                kwargs["temperature"] = s.temperature
            ids = self.model.generate(**inputs, **kwargs)
            new = ids[:, inputs["input_ids"].shape[1] :]
            out += self.processor.batch_decode(new, skip_special_tokens=True)
        return out  # raw: the format check must see exactly what the model wrote
