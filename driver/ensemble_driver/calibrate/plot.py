"""The figure of ``ensemble-driver calibrate -o IMAGE``.

Left: model 0's largest atomic force error against max_devi_f, every frame a point
(log-log), the line y = x, the error target, and the proposed window shaded, each point
coloured by its class (accurate, candidate, failed). Right: the reliability of the
committee's spread: the observed error of the committee mean against its alpha-scaled
spread (RMS over bins of equal counts), for the force components and the energies per
atom; on the line y = x the spread is calibrated (Musil et al., J. Chem. Theory Comput.
15, 906 (2019)). Without alpha (fewer than 4 models) the spread is drawn unscaled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..devi.plot import SHADES, save_figure
from .statistics import FrameNumbers, classes, reliability

POINTS = {"accurate": "#2e7d32", "candidate": "#e0a100", "failed": "#c62828"}


def plot_calibration(report: dict, numbers: Sequence[FrameNumbers], output: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.6))
    _scatter(ax, report, numbers)
    _reliability(rel, report, numbers)
    save_figure(fig, output)


def _positive(values: np.ndarray) -> np.ndarray:
    """Values for a log axis: zeros (identical models, a perfect force) at the smallest positive one."""
    floor = values[values > 0].min() if (values > 0).any() else 1e-6
    return np.maximum(values, floor)


def _scatter(ax, report: dict, numbers: Sequence[FrameNumbers]) -> None:
    raw = np.array([n.max_devi_f for n in numbers])
    devi = _positive(raw)
    error = _positive(np.array([n.max_force_error for n in numbers]))
    low, high = min(devi.min(), error.min()) / 1.5, max(devi.max(), error.max()) * 1.5
    proposal = report["proposal"]
    if proposal is not None:
        lo, hi = proposal["trust_lo"], proposal["trust_hi"]
        for name, (a, b) in {"accurate": (low, lo), "candidate": (lo, hi), "failed": (hi, high)}.items():
            if b > a:
                ax.axvspan(a, b, color=SHADES[name], zorder=0)
        ax.axhline(proposal["error_target"], color="black", lw=1, ls=":", label=f"target {proposal['error_target']:g}")
        cls = classes(raw, lo, hi)
        for k, name in enumerate(("accurate", "candidate", "failed")):
            mine = cls == k
            if mine.any():
                ax.scatter(devi[mine], error[mine], s=10, color=POINTS[name], label=f"{name} ({int(mine.sum())})")
    else:
        ax.scatter(devi, error, s=10, color="#4a6fa5", label=f"frames ({len(devi)})")
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(r"max_devi_f (eV/$\AA$)")
    ax.set_ylabel(r"model 0's largest force error (eV/$\AA$)")
    rho = report["spearman"]
    ax.set_title("error against deviation" + ("" if rho is None else f", Spearman {rho:.2f}"))
    ax.legend(fontsize=7, loc="upper left")


def _reliability(ax, report: dict, numbers: Sequence[FrameNumbers]) -> None:
    alpha = report["alpha"]
    series = (
        (
            "force components",
            alpha["force"]["alpha"],
            np.concatenate([n.force_variances for n in numbers]),
            np.concatenate([n.force_residuals for n in numbers]),
            "o",
        ),
        (
            "energy per atom",
            alpha["energy"]["alpha"],
            np.array([n.energy_variance for n in numbers]),
            np.array([n.energy_residual for n in numbers]),
            "s",
        ),
    )
    points = []
    for name, a, variances, residuals, marker in series:
        scale = 1.0 if a is None else a
        bins = reliability(scale * np.sqrt(variances), residuals)
        if not bins:
            continue
        x = np.array([b["predicted"] for b in bins])
        y = np.array([b["observed"] for b in bins])
        points += [x, y]
        label = f"{name}, alpha {a:.2f}" if a is not None else f"{name}, unscaled"
        ax.plot(x, y, marker=marker, ms=5, lw=1, label=label)
    if points:
        values = np.concatenate(points)
        values = values[values > 0]
        low, high = values.min() / 1.5, values.max() * 1.5
        ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="calibrated (y = x)")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"alpha $\times$ committee spread (RMS in bin)")
    ax.set_ylabel("error of the committee mean (RMS in bin)")
    ax.set_title("reliability of the spread (eV/$\\AA$, eV/atom)")
    ax.legend(fontsize=7, loc="upper left")
