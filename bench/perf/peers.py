"""Our Cohen RS side by side with IBM ART's on the same network (the command is ``python -m bench.art_compare``).

Certifies K images of the embedded evaluation set with :class:`baselines.CohenRS` and with the
Adversarial Robustness Toolbox's ``PyTorchRandomizedSmoothing.certify`` (a test/benchmark-only
dependency, imported lazily) on the same SLL network ``sll+ce`` at the same sigma, n0, n and alpha, and
writes per-image radii and times, a two-sample Kolmogorov-Smirnov test of the two radius distributions,
a paired Wilcoxon test of the radius differences, the fraction of equal predictions and the speed ratio
to ``art_comparison.csv`` and ``art_comparison.md`` (default ``runs/fashion-mnist/art``).

How ART's certify maps onto ours (ART 1.20, ``RandomizedSmoothingMixin.certify``):

* ``sample_size`` (constructor) is the selection count n0, ``certify(x, n, batch_size)`` draws n fresh
  estimation samples: the same two-stage CERTIFY, selection samples not reused.
* The bound is the same: ``proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]``, abstain
  (-1, radius 0) below 1/2, radius ``scale * norm.ppf(pA_lower)``; ``scale`` is sigma.
* Noise is not clipped in ``certify`` (``clip_values`` only matters for attacks); we pass none.
* Differences: ART draws float64 noise with NumPy's global generator on the host (then casts to
  float32), materialises all n noisy copies of an image in host memory at once (n x d floats, growing
  with n), copies each batch to the device and the scores back to the host, and counts votes with
  NumPy; it certifies one image at a time. Ours draws float32 noise on the device from per-(seed,
  stage, image, block) generators, in memory bounded by the batch, counts on the device and lets images
  share a batch when n is small. The noise streams differ, so the radii of one image differ by Monte
  Carlo error only, and agree in distribution.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from baselines import CohenRS
from smoothing.checks import timed


class ARTMissing(ImportError):
    """IBM ART is not installed (it is a test/benchmark-only dependency)."""


def art_smoothing_class():
    """ART's ``PyTorchRandomizedSmoothing``, imported on demand."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError as err:
        raise ARTMissing("IBM's adversarial-robustness-toolbox is needed for this comparison (a test/benchmark-only "
                         "dependency): pip install -e '.[test]' or pip install adversarial-robustness-toolbox") from err
    return PyTorchRandomizedSmoothing


def art_certifier(model: torch.nn.Module, input_shape: tuple[int, ...], classes: int, sigma: float, n0: int,
                  alpha: float, device: torch.device):
    """ART's smoothed classifier around ``model`` with our settings (no clipping, no preprocessing)."""
    cls = art_smoothing_class()
    return cls(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(input_shape), nb_classes=classes,
               clip_values=None, device_type="gpu" if device.type == "cuda" else "cpu", sample_size=n0, scale=sigma,
               alpha=alpha)


def compare(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, sigma: float,
            n0: int, n: int, alpha: float, batch_size: int, seed: int = 0,
            progress: bool = False, memory_format: str = "contiguous") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Certify each image with CohenRS and with ART; per-image rows and the summary statistics.

    Both run one image per call, after one untimed warm-up call each, with ``batch_size`` samples per
    forward pass; ``model`` must be on ``images``' device. ART's NumPy generator is seeded with ``seed``.
    ``memory_format`` is the layout of our noisy batches (:class:`~baselines.CohenRS`; the harness times
    Cohen in the faster one); ART gives the network its batches as they come (contiguous).
    """
    device = images.device
    model.eval()
    with torch.inference_mode():
        classes = int(model(images[:1]).shape[1])
    ours = CohenRS(model, sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                   memory_format=memory_format)
    art = art_certifier(model, tuple(images.shape[1:]), classes, sigma, n0, alpha, device)
    host = images.detach().cpu().numpy().astype(np.float32)
    np.random.seed(seed)
    ours.certify(images[:1], indices=indices[:1])          # warm-up (allocator, kernels)
    art.certify(host[:1], n=min(n, batch_size), batch_size=batch_size)
    rows = []
    for i in tqdm(range(len(images)), desc="ours vs ART", disable=not progress, file=sys.stderr):
        cert = ours.certify(images[i:i + 1], indices=indices[i:i + 1])
        with timed(device) as elapsed:
            prediction, radius = art.certify(host[i:i + 1], n=n, batch_size=batch_size)
        rows.append({"idx": int(indices[i]), "label": int(labels[i]),
                     "ours_prediction": int(cert.prediction[0]), "ours_radius": float(cert.radius[0]),
                     "ours_seconds": cert.seconds,
                     "art_prediction": int(prediction[0]), "art_radius": float(radius[0]), "art_seconds": elapsed[0]})
    frame = pd.DataFrame(rows)
    return frame, summarize(frame, dict(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                                       memory_format=memory_format))


def summarize(frame: pd.DataFrame, settings: dict[str, Any]) -> dict[str, Any]:
    """Agreement and speed statistics of a :func:`compare` frame.

    The radii are compared at 9 significant digits: ours are lowered by up to ~2e-10 relative (at n = 10^6)
    so that the floating-point bound stays below the exact one (``smoothing.statistics.BOUND_SLACK`` and
    ``RADIUS_SLACK``), ART's are not; that difference is not a disagreement between the two methods'
    statistics (a capped radius would otherwise never tie).
    """
    ours, art = (np.asarray([float(f"{r:.9g}") for r in frame[column]]) for column in ("ours_radius", "art_radius"))
    ks = stats.ks_2samp(ours, art)
    diff = ours - art
    wilcoxon_p = float("nan")
    if np.count_nonzero(diff) > 0:
        wilcoxon_p = float(stats.wilcoxon(ours, art, zero_method="zsplit").pvalue)
    ours_s, art_s = float(frame["ours_seconds"].median()), float(frame["art_seconds"].median())
    return {
        **settings, "images": len(frame),
        "equal_predictions": float((frame["ours_prediction"] == frame["art_prediction"]).mean()),
        "ours_abstain": float((frame["ours_prediction"] == -1).mean()),
        "art_abstain": float((frame["art_prediction"] == -1).mean()),
        "ours_mean_radius": float(ours.mean()), "art_mean_radius": float(art.mean()),
        "mean_abs_radius_difference": float(np.abs(diff).mean()),
        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue), "wilcoxon_pvalue": wilcoxon_p,
        "agree_in_distribution": bool(ks.pvalue > 0.05),
        "ours_seconds_per_image": ours_s, "art_seconds_per_image": art_s, "art_over_ours": art_s / ours_s,
    }


def markdown(frame: pd.DataFrame, summary: dict[str, Any], device_name: str) -> str:
    s = summary
    lines = [
        "# Cohen RS: ours (baselines.CohenRS) vs IBM ART (PyTorchRandomizedSmoothing.certify)",
        "",
        f"Network sll+ce, {s['images']} images, sigma {s['sigma']:g}, n0 {s['n0']:,}, n {s['n']:,}, alpha "
        f"{s['alpha']:g}, batch {s['batch_size']:,}, seed {s['seed']}, our noisy batches "
        f"{s.get('memory_format', 'contiguous')} (ART's contiguous); {device_name}; "
        f"{_dt.date.today().isoformat()}.",
        "",
        "| statistic | ours | ART |",
        "| --- | --- | --- |",
        f"| seconds per image (median) | {s['ours_seconds_per_image']:.4g} | {s['art_seconds_per_image']:.4g} |",
        f"| mean radius | {s['ours_mean_radius']:.4f} | {s['art_mean_radius']:.4f} |",
        f"| abstentions | {100 * s['ours_abstain']:.1f}% | {100 * s['art_abstain']:.1f}% |",
        "",
        f"- ART / ours time per image: **{s['art_over_ours']:.2f}x**.",
        f"- Equal predictions: {100 * s['equal_predictions']:.1f}% of images.",
        f"- Radii, two-sample Kolmogorov-Smirnov: D = {s['ks_statistic']:.3f}, p = {s['ks_pvalue']:.3g} "
        f"({'agree' if s['agree_in_distribution'] else 'differ'} in distribution at the 5% level); paired "
        f"Wilcoxon p = {s['wilcoxon_pvalue']:.3g}; mean |difference| {s['mean_abs_radius_difference']:.4f}.",
        "- Same CERTIFY (n0 selection + n fresh estimation samples, one-sided Clopper-Pearson at alpha, "
        "radius sigma * Phi^-1(pA_lower), no clipping); different noise streams (ART: NumPy float64 on the host, "
        "all n copies materialised; ours: float32 on the device, per-block seeded generators), so radii of one "
        "image differ by Monte Carlo error.",
        "",
        "Per image: `art_comparison.csv`.",
        "",
    ]
    return "\n".join(lines)


def write(frame: pd.DataFrame, summary: dict[str, Any], out: Path, device_name: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "art_comparison.csv", index=False)
    (out / "art_comparison.md").write_text(markdown(frame, summary, device_name))
    (out / "art_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def art_version() -> str:
    try:
        import art

        return str(art.__version__)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"
