"""Perceptual similarity of two images, in [0, 1]: the measures behind s_img.

* ``synthetic_image_similarity``: cheap pixel statistics for two renders of the synthetic renderer on the
  same content (colour layout, hue-saturation palette, texture energy);
* ``DreamSimMetric``: the paper's metric, ``1 - DreamSim distance``, from a local DreamSim cache;
* ``EmbeddingPerceptualMetric``: a DreamSim-like fallback, the cosine of a local vision model's embeddings.

``load_perceptual_metric(path)`` picks DreamSim or the embedding fallback from what the folder holds.
Model metrics expose ``similarity(images_a, images_b) -> list[float]``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from preferthinker.rewards.config import resolve_device

log = logging.getLogger("preferthinker.rewards")


def synthetic_image_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """A cheap perceptual similarity in [0, 1] for two HxWx3 uint8 images rendered on the same content.

    The mean of three terms, each in [0, 1]:
    * layout: 1 - mean |a - b| of 16x16 box-downsampled images (colour and composition);
    * palette: intersection of 8x8 hue-saturation histograms (colour and saturation, position-free);
    * texture: 1 - relative difference of the mean gradient magnitude (detail, medium).
    """
    a = np.asarray(a, dtype=np.float32) / 255.0
    b = np.asarray(b, dtype=np.float32) / 255.0
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"images must share one HxWx3 shape, got {a.shape} and {b.shape}")
    a, b = a[..., :3], b[..., :3]
    layout = 1.0 - float(np.mean(np.abs(_box_down(a, 16) - _box_down(b, 16))))
    ha, hb = _hs_hist(a), _hs_hist(b)
    palette = float(np.minimum(ha, hb).sum())
    ga, gb = _grad_energy(a), _grad_energy(b)
    texture = 1.0 - abs(ga - gb) / max(ga, gb, 1e-6)
    return float(np.clip((layout + palette + texture) / 3.0, 0.0, 1.0))


def _box_down(img: np.ndarray, side: int) -> np.ndarray:
    h, w, c = img.shape
    hs, ws = max(h // side, 1), max(w // side, 1)
    img = img[: hs * (h // hs), : ws * (w // ws)]
    return img.reshape(h // hs, hs, w // ws, ws, c).mean(axis=(1, 3))


def _hs_hist(img: np.ndarray, bins: int = 8) -> np.ndarray:
    mx, mn = img.max(axis=2), img.min(axis=2)
    delta = mx - mn
    sat = np.where(mx > 1e-6, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6.0
    hue = np.where(delta > 1e-6, hue, 0.0)
    hist, _, _ = np.histogram2d(hue.ravel(), sat.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    return hist / max(hist.sum(), 1.0)


def _grad_energy(img: np.ndarray) -> float:
    gray = img.mean(axis=2)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


class EmbeddingPerceptualMetric:
    """DreamSim-like similarity: cosine of image embeddings from a local transformers vision model
    (DINO/DINOv2/ViT/CLIP folder with ``config.json``), clamped to [0, 1]. DreamSim itself is an
    ensemble of such embeddings fine-tuned on human similarity judgements, with distance = 1 - cosine."""

    def __init__(self, model_path: str | os.PathLike, device: str = "auto"):
        import torch
        from transformers import AutoModel

        self.device = resolve_device(device)
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True).to(self.device).eval()
        cfg = getattr(self.model.config, "vision_config", None) or self.model.config
        self.image_size = int(getattr(cfg, "image_size", 224) or 224)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        proc = Path(model_path) / "preprocessor_config.json"
        if proc.is_file():
            pc = json.loads(proc.read_text())
            self.mean = tuple(pc.get("image_mean", self.mean))
            self.std = tuple(pc.get("image_std", self.std))
        self._torch = torch

    def _embed(self, images: Sequence[Any]):
        torch = self._torch
        arrs = []
        for im in images:
            im = im.convert("RGB").resize((self.image_size, self.image_size), resample=3)  # 3 = bicubic
            arrs.append(np.asarray(im, dtype=np.float32) / 255.0)
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        x = (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        x = x.to(self.device, dtype=next(self.model.parameters()).dtype)
        with torch.inference_mode():
            if hasattr(self.model, "get_image_features"):
                emb = self.model.get_image_features(pixel_values=x)
                emb = getattr(emb, "pooler_output", emb)
            else:
                out = self.model(pixel_values=x)
                pooled = getattr(out, "pooler_output", None)
                if pooled is None:
                    hidden = out.last_hidden_state
                    pooled = hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden[:, 0]
                emb = pooled
        return torch.nn.functional.normalize(emb.float().flatten(1), dim=-1)

    def similarity(self, images_a: Sequence[Any], images_b: Sequence[Any]) -> list[float]:
        ea, eb = self._embed(images_a), self._embed(images_b)
        return [float(v) for v in (ea * eb).sum(-1).clamp(0.0, 1.0).cpu()]


class DreamSimMetric:
    """The paper's metric: s_img = 1 - DreamSim distance, from a local DreamSim cache folder
    (``dreamsim`` installed; weights already in ``cache_dir``, nothing downloaded)."""

    _TYPES = ("ensemble", "dino_vitb16", "dinov2_vitb14", "open_clip_vitb32", "clip_vitb32", "synclr_vitb16")

    def __init__(self, cache_dir: str | os.PathLike, device: str = "auto"):
        from dreamsim import dreamsim

        device = resolve_device(device)
        kind = next((t for t in self._TYPES if (Path(cache_dir) / f"{'ensemble' if t == 'ensemble' else t + '_single'}_lora").is_dir()), None)
        if kind is None:
            raise FileNotFoundError(f"no DreamSim LoRA folder (e.g. ensemble_lora) in {cache_dir}")
        self.model, self.preprocess = dreamsim(pretrained=True, device=device, cache_dir=str(cache_dir), dreamsim_type=kind)
        self.device = device

    def similarity(self, images_a: Sequence[Any], images_b: Sequence[Any]) -> list[float]:
        import torch

        out = []
        with torch.inference_mode():
            for a, b in zip(images_a, images_b, strict=True):
                d = self.model(self.preprocess(a).to(self.device), self.preprocess(b).to(self.device))
                out.append(float(min(max(1.0 - float(d), 0.0), 1.0)))
        return out


def load_perceptual_metric(path: str | os.PathLike, device: str = "auto") -> DreamSimMetric | EmbeddingPerceptualMetric:
    """DreamSim when ``path`` is a DreamSim cache and ``dreamsim`` is installed, else an embedding model."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"perceptual metric folder not found: {p} (reward.prediction.diffusers.metric_path)")
    if any(p.glob("*_lora")):
        try:
            return DreamSimMetric(p, device)
        except ImportError:
            log.warning("%s looks like a DreamSim cache but 'dreamsim' is not installed; trying it as an embedding model", p)
    if (p / "config.json").is_file():
        return EmbeddingPerceptualMetric(p, device)
    raise FileNotFoundError(
        f"{p} is neither a DreamSim cache (ensemble_lora/ + backbone weights, needs `pip install dreamsim`) "
        "nor a transformers vision model folder with config.json"
    )
