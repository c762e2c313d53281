"""``ensemble-driver plot``: the deviation of a run at a glance.

Left: max_devi_f against step, one line per deviation file (per bead), with the trust
levels as horizontal lines. Right: the histogram of max_devi_f over all rows, the
accurate, candidate and failed ranges shaded, and the share of rows in each. Reads any
file in LAMMPS's model_devi.out layout (this driver's, LAMMPS's, DP-GEN's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError

SHADES = {"accurate": "#d9f0d3", "candidate": "#fee8a6", "failed": "#f4c2c2"}


def read_deviation_file(path: str | Path) -> np.ndarray:
    """The rows of a model_devi.out file as an (n, >= 7) array; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"deviation file {path}: {exc.strerror}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(x) for x in line.split()]
        except ValueError:
            raise ConfigError(f"deviation file {path}, line {lineno}: not numbers: {line.strip()[:60]!r}") from None
        if len(values) < 7:
            raise ConfigError(f"deviation file {path}, line {lineno}: {len(values)} columns, expected at least 7")
        rows.append(values[:7])
    return np.array(rows).reshape(-1, 7)


def _label(path: Path, many: bool) -> str:
    """The file's name: per-bead files count beads from 1 (model_devi1.out is bead 0 in
    i-PI's numbering and in devi_summary.json), so a bare number would mislead."""
    return path.stem if many else path.name


def plot_deviation(
    files: Sequence[str | Path],
    output: str | Path,
    *,
    trust_lo: float | None = None,
    trust_hi: float | None = None,
    title: str | None = None,
) -> dict[str, int]:
    """Write the figure to ``output``; return the number of rows in each class (empty
    without trust levels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if (trust_lo is None) != (trust_hi is None):
        raise ConfigError("--trust-lo and --trust-hi go together")
    if trust_lo is not None and not 0 <= trust_lo <= trust_hi:
        raise ConfigError(f"need 0 <= --trust-lo <= --trust-hi, got {trust_lo} and {trust_hi}")
    paths = [Path(f) for f in files]
    data = [(p, read_deviation_file(p)) for p in paths]
    empty = [str(p) for p, rows in data if not len(rows)]
    if len(empty) == len(data):
        raise ConfigError(f"no deviation rows in {', '.join(empty)}")
    fmax_all = np.concatenate([rows[:, 4] for _, rows in data])

    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    colors = plt.get_cmap("viridis" if len(data) > 10 else "tab10")
    many = len(data) > 1
    for k, (path, rows) in enumerate(data):
        if not len(rows):
            continue
        color = colors(k / max(len(data) - 1, 1)) if len(data) > 10 else colors(k % 10)
        ax.plot(
            rows[:, 0],
            rows[:, 4],
            lw=1.2,
            marker="." if len(rows) < 60 else None,
            ms=4,
            color=color,
            label=_label(path, many),
        )
    ax.set_xlabel("step")
    ax.set_ylabel(r"max_devi_f (eV/$\AA$)")
    ax.set_ylim(bottom=0)
    counts: dict[str, int] = {}
    top = max(fmax_all.max(), trust_hi or 0) * 1.08
    if trust_lo is not None:
        bands = {"accurate": (0, trust_lo), "candidate": (trust_lo, trust_hi), "failed": (trust_hi, top)}
        for name, (lo, hi) in bands.items():
            ax.axhspan(lo, hi, color=SHADES[name], zorder=0)
            hist.axvspan(lo, hi, color=SHADES[name], zorder=0)
        for level, name in ((trust_lo, "trust lo"), (trust_hi, "trust hi")):
            ax.axhline(level, color="black", lw=1, ls="--")
            ax.annotate(
                f"{name} {level:g}",
                (1.0, level),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
            )
        counts = {
            "accurate": int(np.sum(fmax_all < trust_lo)),
            "candidate": int(np.sum((fmax_all >= trust_lo) & (fmax_all < trust_hi))),
            "failed": int(np.sum(fmax_all >= trust_hi)),
        }
    ax.set_ylim(0, top)
    if many and len(data) <= 16:
        ax.legend(fontsize=7, ncol=2 if len(data) > 8 else 1, loc="upper left")
    ax.set_title(title or ("max force deviation per bead" if many else "max force deviation"))

    bins = np.linspace(0, top, 41)
    hist.hist(fmax_all, bins=bins, color="#4a6fa5", edgecolor="white", lw=0.5)
    hist.set_xlabel(r"max_devi_f (eV/$\AA$)")
    hist.set_ylabel("rows")
    hist.set_xlim(0, top)
    summary = f"{len(fmax_all)} rows"
    if counts:
        total = len(fmax_all)
        summary += "\n" + "\n".join(f"{k}: {v} ({100 * v / total:.0f}%)" for k, v in counts.items())
    hist.text(
        0.97,
        0.97,
        summary,
        transform=hist.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
    )
    hist.set_title("distribution")
    save_figure(fig, output)
    return counts


def save_figure(fig, output: str | Path) -> None:
    """Lay out ``fig``, write it to ``output`` (the suffix picks the format) and close it;
    a path that cannot be written is one line."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    output = Path(output)
    try:
        fig.savefig(output, dpi=130)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    finally:
        plt.close(fig)
