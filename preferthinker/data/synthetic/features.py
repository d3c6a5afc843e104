"""Pixel statistics that make each element measurable: used by the CoT teacher (to cite what is in an
image) and by the non-learned baseline (to recover each element from the references).

Every function takes an RGB image (uint8 array or PIL image) of any square size and looks at the
pixels only; nothing here reads the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from preferthinker.profile import ELEMENTS
from preferthinker.data.synthetic.render import BASE, blur

__all__ = ["hsv_planes", "measure", "element_features", "FEATURE_NAMES"]


def _as_array(img) -> np.ndarray:
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {arr.shape}")
    return arr


def hsv_planes(img) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation and value planes of an RGB image, as float32."""
    rgb = _as_array(img).astype(np.float32) / 255.0
    mx = rgb.max(-1)
    mn = rgb.min(-1)
    c = mx - mn
    s = np.where(mx > 1e-6, c / np.maximum(mx, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(c, 1e-6)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    h = np.where(c > 1e-6, h, 0.0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


def _shifts(x: np.ndarray, k: int = 1) -> np.ndarray:
    p = np.pad(x, k, mode="edge")
    n = x.shape[0]
    return np.stack([p[i : i + n, j : j + n] for i in range(2 * k + 1) for j in range(2 * k + 1)])


def _grad_p99(x: np.ndarray) -> float:
    g = np.concatenate([np.abs(np.diff(x, axis=0)).ravel(), np.abs(np.diff(x, axis=1)).ravel()])
    return float(np.percentile(g, 99))


def _median3(x: np.ndarray) -> np.ndarray:
    """3x3 median filter (edge-replicated) with a 19-exchange sorting network (exact, fast)."""
    p = list(_shifts(x, 1))

    def ex(a: int, b: int) -> None:
        p[a], p[b] = np.minimum(p[a], p[b]), np.maximum(p[a], p[b])

    for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        ex(a, b)
    return p[4]


def _maxf3(x: np.ndarray) -> np.ndarray:
    return _shifts(x, 1).max(axis=0)


def _peak_snr(profile: np.ndarray, cycles: int, n: int) -> float:
    """log(1 + spectral magnitude of a 1-D profile at ``cycles`` per image side / median magnitude)."""
    p = np.concatenate([profile, profile[-1:]])[:n]
    f = np.abs(np.fft.rfft(p - p.mean()))
    if cycles >= len(f):
        return 0.0
    return float(np.log1p(f[cycles] / (np.median(f[1:]) + 1e-6)))


def measure(img) -> dict[str, float]:
    """Named scalar measurements of one image (all in [0, 1]-ish units, hue in degrees)."""
    h, s, v = hsv_planes(img)
    n = v.shape[0]
    scale = n / BASE
    out: dict[str, float] = {}

    # --- Color: chroma-weighted circular mean of the hue
    w = s * v
    ang = np.radians(h)
    cx, cy = float((w * np.cos(ang)).sum()), float((w * np.sin(ang)).sum())
    out["hue"] = float(np.degrees(np.arctan2(cy, cx)) % 360.0)
    out["hue_cos"], out["hue_sin"] = cx / (w.sum() + 1e-6), cy / (w.sum() + 1e-6)

    # --- Saturation: median HSV saturation over pixels that are not near-black
    lit = v > 0.12
    out["saturation"] = float(np.median(s[lit])) if lit.any() else 0.0

    # --- Detail: robust noise level of log-brightness from the diagonal (Haar HH) difference of
    # every 2x2 window: flat fills, horizontal/vertical edges and grid lines give 0 there, while
    # pixel-level grain gives |HH| ~ its amplitude; percentiles say how much and how evenly.
    logv = np.log(v + 0.03)
    hh = np.abs(logv[:-1, :-1] - logv[:-1, 1:] - logv[1:, :-1] + logv[1:, 1:]) * 0.5
    q25, q50, q75 = np.percentile(hh, [25, 50, 75])
    out["texture_energy"] = float(q50)
    out["texture_q25"] = float(q25)
    out["texture_q75"] = float(q75)
    out["texture_specks"] = float((hh > 0.45).mean())
    # periodic diagonal crosshatch (period 3 px at 56 px = 56/3 cycles per side)
    sres = logv - _median3(logv)
    fr = np.abs(np.fft.fft2(sres)) ** 2
    kc = BASE / 3.0
    fy = np.abs(np.fft.fftfreq(n) * BASE)
    band = (np.abs(fy[:, None] - kc) <= 1.0) & (np.abs(fy[None, :] - kc) <= 1.0)
    out["texture_hatch"] = float(fr[band].sum() / (fr.sum() + 1e-9))
    # where the texture is (Selective: textured shapes on a smooth ground)
    emap = blur(np.pad(hh, ((0, 1), (0, 1)), mode="edge"), 2.0 * scale)
    hi = float(np.percentile(emap, 90))
    out["texture_local_p90"] = hi
    out["texture_smooth_share"] = float((emap < 0.3 * hi + 0.003).mean())

    # --- Artistic Medium
    dx = np.abs(np.diff(v, axis=1)).mean(0)
    dy = np.abs(np.diff(v, axis=0)).mean(1)
    out["tile_grid"] = 0.5 * (_peak_snr(dx, 8, n) + _peak_snr(dy, 8, n))
    f2 = np.abs(np.fft.fft2(v - v.mean()))
    k = 10
    peak = (f2[k, k] + f2[k, -k] + f2[-k, k] + f2[-k, -k] + f2[k, 0] + f2[0, k] + f2[-k, 0] + f2[0, -k]) / 8.0
    out["dot_grid"] = float(np.log1p(peak / (np.median(f2) + 1e-6)))
    vm = _median3(v)
    out["light_share"] = float((vm > 0.84).mean())
    out["dark_share"] = float((vm < 0.3).mean())
    out["mid_share"] = float(((vm >= 0.38) & (vm <= 0.72)).mean())
    p30, p90 = np.percentile(vm, [30, 90])
    out["fill_spread"] = float(p90 - p30)
    out["thin_lines"] = float(((vm - v) > 0.25).mean())
    rng_v = float(np.percentile(vm, 98) - np.percentile(vm, 2)) + 1e-3
    out["tone_range"] = rng_v
    out["edge_sharpness"] = float(np.log(_grad_p99(blur(vm, 1.0 * scale)) / (_grad_p99(blur(vm, 2.5 * scale)) + 1e-6) + 1e-6))
    low = blur(vm, 2.5 * scale)
    out["wash_mottle"] = float(np.percentile(np.abs(vm - low), 50) / rng_v)

    # --- Art Styles (on a lightly blurred brightness plane)
    vb = blur(v, 1.2 * scale)
    out["outline_share"] = float((_maxf3(v) < 0.12).mean())
    flip = vb[:, ::-1]
    a0, a1 = vb - vb.mean(), flip - flip.mean()
    out["mirror_symmetry"] = float((a0 * a1).sum() / (np.sqrt((a0**2).sum() * (a1**2).sum()) + 1e-9))
    sb = blur(v, 2.0 * scale)
    gxs = np.zeros_like(sb)
    gys = np.zeros_like(sb)
    gxs[:, 1:-1] = (sb[:, 2:] - sb[:, :-2]) * 0.5
    gys[1:-1, :] = (sb[2:, :] - sb[:-2, :]) * 0.5
    mag2 = gxs**2 + gys**2
    theta = np.arctan2(gys, gxs)
    wsum = float(mag2.sum()) + 1e-9
    out["axis_alignment"] = float((mag2 * np.cos(4 * theta)).sum() / wsum)
    mag = np.sqrt(mag2) * n / BASE
    out["edge_density"] = float((mag > 0.02).mean())
    bs = max(2, n // 8)
    blocks = sb[: bs * 8, : bs * 8].reshape(8, bs, 8, bs).std(axis=(1, 3))
    out["empty_share"] = float((blocks < 0.02).mean())
    # orientation histogram (straight edges concentrate it, curves spread it)
    hist = np.bincount(((theta % np.pi) / np.pi * 18).astype(np.int64).ravel() % 18, weights=mag2.ravel(), minlength=18)
    out["orientation_peak"] = float(np.sort(hist)[-3:].sum() / (hist.sum() + 1e-9))
    # cornerness: smallest / largest eigenvalue of the local structure tensor (corners vs edges)
    jxx, jyy, jxy = (blur(a, 1.5 * scale) for a in (gxs * gxs, gys * gys, gxs * gys))
    tr = jxx + jyy
    det = jxx * jyy - jxy**2
    lmin = 0.5 * tr - np.sqrt(np.maximum(0.25 * tr**2 - det, 0))
    out["cornerness"] = float(lmin.sum() / (tr.sum() + 1e-9))
    # straightness: orientation coherence that survives a wide window (straight edges) or not (curves)
    kxx, kyy, kxy = (blur(a, 4.0 * scale) for a in (gxs * gxs, gys * gys, gxs * gys))
    coh_small = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)
    coh_big = np.sqrt((kxx - kyy) ** 2 + 4 * kxy**2)
    out["straightness"] = float(coh_big.sum() / (coh_small.sum() + 1e-9))
    # radial convergence: gradients perpendicular to the direction to the picture's vertical axis
    out["tone_spread"] = float(np.std(sb))
    return out


# feature names per element for the baseline (standardised then compared)
FEATURE_NAMES: dict[str, tuple[str, ...]] = {
    "Art Styles": ("outline_share", "mirror_symmetry", "axis_alignment", "edge_density", "empty_share", "tone_spread", "orientation_peak", "cornerness", "straightness"),
    "Color": ("hue_cos", "hue_sin"),
    "Artistic Medium": ("tile_grid", "dot_grid", "light_share", "dark_share", "mid_share", "fill_spread", "thin_lines", "edge_sharpness", "wash_mottle"),
    "Saturation": ("saturation",),
    "Detail": ("texture_energy", "texture_q25", "texture_q75", "texture_specks", "texture_hatch", "texture_smooth_share"),
}


def element_features(m: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Split a ``measure`` dict into one feature vector per element."""
    return {e: np.array([m[k] for k in FEATURE_NAMES[e]], np.float64) for e in ELEMENTS}
