"""The report of ``ensemble-driver calibrate``: one dict (written as JSON, with every
frame's numbers) and its printed summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .data import Labelled
from .statistics import FrameNumbers, classes, musil_alpha, propose_trust_hi, propose_trust_lo, spearman, window

TRUST_HI_RULE = (
    "the (1 - miss_rate) quantile of max_devi_f over the frames whose force error is above the target, "
    "never below trust_lo"
)
TRUST_LO_RULE = (
    "the largest level below which at most a fraction miss_rate of the frames has a force error above the target"
)
#: the per-frame columns of the JSON report, and the FrameNumbers field of each
COLUMNS = {
    "max_force_error": "max_force_error",
    "force_rmse": "force_rmse",
    "energy_error_per_atom": "energy_error",
    "max_devi_f": "max_devi_f",
    "avg_devi_f": "avg_devi_f",
    "devi_e": "devi_e",
}


def _summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p95": float(np.quantile(v, 0.95)),
        "max": float(v.max()),
    }


def make_report(settings, systems: Sequence[Labelled], numbers: Sequence[FrameNumbers]) -> dict:
    """Everything calibrate found: ``settings`` (a CalibrateSettings), the systems and
    each frame's numbers in the systems' order."""
    column = {name: np.array([getattr(n, f) for n in numbers]) for name, f in COLUMNS.items()}
    natoms = np.array([n.natoms for n in numbers])
    members = len(settings.models)
    alpha_e = musil_alpha([n.energy_residual for n in numbers], [n.energy_variance for n in numbers], members)
    alpha_f = musil_alpha(
        np.concatenate([n.force_residuals for n in numbers]),
        np.concatenate([n.force_variances for n in numbers]),
        members,
    )
    components = 3 * natoms
    report = {
        "models": list(settings.models),
        "data": list(settings.data),
        "systems": [{"name": s.name, "frames": len(s.frames), "natoms": len(s.frames[0].symbols)} for s in systems],
        "frames": len(numbers),
        "units": {"force": "eV/Angstrom", "energy": "eV/atom"},
        "model0": {
            "max_force_error": _summary(column["max_force_error"]),
            "force_rmse": float(np.sqrt(np.sum(column["force_rmse"] ** 2 * components) / np.sum(components))),
            "energy_mae_per_atom": float(np.mean(np.abs(column["energy_error_per_atom"]))),
            "energy_rmse_per_atom": float(np.sqrt(np.mean(column["energy_error_per_atom"] ** 2))),
        },
        "max_devi_f": _summary(column["max_devi_f"]),
        "spearman": spearman(column["max_devi_f"], column["max_force_error"]),
        "alpha": {
            "energy": alpha_e.as_dict(),
            "force": alpha_f.as_dict(),
            "note": None if members >= 4 else f"alpha needs 4 or more models, got {members}",
        },
        "proposal": None,
        "per_frame": [],
    }
    if settings.error_target is not None:
        report["proposal"] = _proposal(column, settings.error_target, settings.miss_rate)
    labels = [(s.name, i) for s in systems for i in s.indices]
    window_classes = (
        classes(column["max_devi_f"], report["proposal"]["trust_lo"], report["proposal"]["trust_hi"])
        if report["proposal"]
        else None
    )
    for j, (name, index) in enumerate(labels):
        row = {"system": name, "index": index, "natoms": int(natoms[j])}
        row.update({key: float(column[key][j]) for key in COLUMNS})
        if window_classes is not None:
            row["class"] = ("accurate", "candidate", "failed")[window_classes[j]]
        report["per_frame"].append(row)
    return report


def _proposal(column: dict, target: float, miss_rate: float) -> dict:
    devi, error = column["max_devi_f"], column["max_force_error"]
    lo = propose_trust_lo(devi, error, target, miss_rate)
    hi = propose_trust_hi(devi, error, target, miss_rate, lo)
    return {
        "error_target": target,
        "miss_rate": miss_rate,
        "trust_lo": lo,
        "trust_hi": hi,
        "trust_lo_rule": TRUST_LO_RULE,
        "trust_hi_rule": TRUST_HI_RULE,
        "frames_above_target": int(np.sum(error > target)),
        "window": window(devi, error, target, lo, hi),
    }


def write_json(report: dict, path: str | Path) -> None:
    path = Path(path)
    try:
        path.write_text(json.dumps(report, indent=1) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def text_report(report: dict) -> str:
    """The printed summary: a few lines a user reads before choosing levels."""
    m0 = report["model0"]
    alpha = report["alpha"]
    lines = [
        f"calibrate: {report['frames']} labelled frames in {len(report['systems'])} system(s), "
        f"{len(report['models'])} models",
        f"  model 0 against the labels: largest atomic force error median {_f(m0['max_force_error']['median'])}, "
        f"95% {_f(m0['max_force_error']['p95'])}, max {_f(m0['max_force_error']['max'])} eV/A; "
        f"force RMSE {_f(m0['force_rmse'])} eV/A; energy error {_f(m0['energy_mae_per_atom'])} eV/atom (MAE)",
        f"  max_devi_f: median {_f(report['max_devi_f']['median'])}, max {_f(report['max_devi_f']['max'])} eV/A; "
        f"Spearman rank correlation with model 0's largest force error: {_f(report['spearman'])}",
    ]
    if alpha["note"]:
        lines.append(f"  alpha: {alpha['note']}")
    else:
        parts = []
        for kind in ("energy", "force"):
            a = alpha[kind]
            parts.append(f"{kind} {_f(a['alpha'])}" + ("" if a["alpha"] else f" (alpha^2 = {_f(a['alpha2'])} <= 0)"))
        lines.append(f"  alpha (Musil et al. 2019, {alpha['energy']['members']} members): " + ", ".join(parts))
    proposal = report["proposal"]
    if proposal is None:
        lines.append("  no trust levels proposed: give --error-target E (eV/A)")
        return "\n".join(lines)
    w = proposal["window"]
    frames, above = w["frames"], w["above_target"]
    lines += [
        f"  proposed for a force error of {_f(proposal['error_target'])} eV/A, miss rate {_f(proposal['miss_rate'])}:"
        f" --trust-lo {proposal['trust_lo']:.6g} --trust-hi {proposal['trust_hi']:.6g}",
        f"    frames: accurate {frames['accurate']} ({above['accurate']} above the target), candidate "
        f"{frames['candidate']} ({above['candidate']} above), failed {frames['failed']} ({above['failed']} above)",
        f"    precision {_f(w['precision'])} (candidates above the target), recall {_f(w['recall'])} "
        f"(of the {proposal['frames_above_target']} frames above the target, the candidates)",
    ]
    return "\n".join(lines)
