"""Models: the interface the rest of the driver uses, and the DeePMD adapter.

Only this module imports deepmd, and only when a model is loaded (importing deepmd's
PyTorch backend costs several seconds). ``deepmd.infer.DeepPot`` picks the backend by
the file suffix (``.pth`` PyTorch, ``.pb`` TensorFlow, ``.savedmodel`` JAX, ...), so every
backend installed beside the driver works.

Units are DeePMD's: Angstrom, eV, eV/Angstrom; the virial is -V * stress (eV), 3x3,
indexed like the cell with lattice vectors as rows.

Frame and atomic parameters (a model trained with ``numb_fparam``/``numb_aparam``) are
given to a model when it is made (:class:`Parameters`) and passed to deepmd-kit on every
call, as LAMMPS's ``pair_style deepmd ... fparam V aparam V`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelError, one_line
from .parameters import NO_PARAMETERS, Parameters
from .signals import Stopped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One model on one structure."""

    energy: float
    forces: np.ndarray  # (nat, 3) eV/Angstrom
    virial: np.ndarray  # (3, 3) eV


@dataclass(frozen=True)
class BatchEvaluation:
    """One model on ``nframes`` structures of the same atoms."""

    energy: np.ndarray  # (nframes,)
    forces: np.ndarray  # (nframes, nat, 3)
    virial: np.ndarray  # (nframes, 3, 3)


def one_backend_thread() -> None:
    """Limit the calling thread's PyTorch intra-op threads to one (``devi``'s worker
    threads, each evaluating its own chunk of frames)."""
    import torch

    torch.set_num_threads(1)


def check_model_file(path: str | Path) -> None:
    """Fail early, before any backend is imported, if a model file is missing."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model {path}: no such file")
    if path.is_file() and not path.stat().st_size:
        raise ConfigError(f"model {path}: the file is empty")


def _torch_huge_pages() -> None:
    """Let torch back its large CPU tensors with transparent huge pages, unless the user
    chose otherwise (``THP_MEM_ALLOC_ENABLE=0``).

    A model call allocates and frees hundreds of MB of tensors (at 2048 atoms: ~110,000
    minor page faults per call here, a third of the call's CPU time spent in the kernel
    mapping and zeroing 4 kB pages). With ``THP_MEM_ALLOC_ENABLE=1`` torch's CPU allocator
    (c10/core/alloc_cpu.cpp) aligns allocations of 2 MB and more to 2 MB and asks for huge
    pages (``madvise(MADV_HUGEPAGE)``): ~15x fewer faults, kernel time per call 361-402 ->
    77-94 ms (``benchmarks/page_faults.py``, benchmarks/README.md "Huge pages"). torch reads the variable once, at its first large
    allocation, so it is set before torch is imported; the results are the same bits."""
    import os

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _import_deep_pot(path: str):
    """Import deepmd's DeepPot. Unless debugging, silence the advice deepmd and torch log
    at WARNING level on import (thread settings, Triton): it drowns the driver's output.
    torch resets its loggers when imported, so it is imported first, for PyTorch models."""
    torch_model = path.endswith((".pth", ".pt"))
    if torch_model:
        _torch_huge_pages()
    if not log.isEnabledFor(logging.DEBUG):
        if torch_model:
            import torch  # noqa: F401

            logging.getLogger("torch").setLevel(logging.ERROR)
        logging.getLogger("deepmd").setLevel(logging.ERROR)
    from deepmd.infer import DeepPot

    return DeepPot


class DeepPotModel:
    """A DeePMD model loaded through ``deepmd.infer.DeepPot``.

    ``type_map`` replaces the element names stored in the model (one per type index).
    ``parameters``: the frame and atomic parameters of every evaluation, checked against
    the model's ``get_dim_fparam()``/``get_dim_aparam()`` here (a ConfigError if they
    do not fit).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        type_map: Sequence[str] | None = None,
        parameters: Parameters = NO_PARAMETERS,
    ):
        self.path = str(path)
        check_model_file(path)
        try:
            DeepPot = _import_deep_pot(self.path)
        except Stopped:
            raise  # a signal during the (slow) import is not an import failure
        except Exception as exc:
            raise ModelError(f"cannot import deepmd-kit to load {self.path}: {one_line(exc)}") from None
        try:
            self._dp = DeepPot(self.path)
        except Exception as exc:
            raise ModelError(f"cannot load model {self.path}: {one_line(exc)}") from None
        if type(getattr(self._dp, "deep_eval", None)).__module__ == "deepmd.dpmodel.infer.deep_eval":
            # deepmd-kit's backend-neutral format (.dp, .yaml) is evaluated in NumPy, which
            # has no derivatives: forces and virial come back NaN (deepmd-kit 3.2,
            # deepmd/dpmodel/infer/deep_eval.py, DeepEval._eval_model fills missing outputs)
            raise ModelError(
                f"model {self.path}: deepmd-kit evaluates this backend-neutral format in NumPy, "
                f"without forces or virial; convert it to a backend first, e.g. "
                f"dp convert-backend {self.path} {Path(self.path).with_suffix('.pth')}"
            )
        stored = list(self._dp.get_type_map())
        ntypes = int(self._dp.get_ntypes())
        if type_map:
            if len(type_map) < ntypes:
                raise ConfigError(f"--type-map names {len(type_map)} types but model {self.path} has {ntypes}")
            self.type_map = list(type_map)
        else:
            self.type_map = stored
        self.dim_fparam, self.dim_aparam = int(self._dp.get_dim_fparam()), int(self._dp.get_dim_aparam())
        self._default_fparam = bool(getattr(self._dp, "has_default_fparam", lambda: False)())
        self.check_parameters(parameters)
        self.parameters = parameters
        self.rcut = float(self._dp.get_rcut())
        self._direct = _direct_evaluator(self._dp)
        log.debug(
            "loaded %s: type map %s, rcut %.2f A%s",
            self.path,
            self.type_map,
            self.rcut,
            f"; {parameters.describe()}" if parameters.describe() else "",
        )

    def atom_types(self, elements: Sequence[str], template: str = "the template") -> np.ndarray:
        """Model type index of every atom, matched by name whatever order either uses."""
        index = {name: i for i, name in enumerate(self.type_map)}
        unknown = sorted({e for e in elements if e not in index})
        if unknown:
            raise ModelError(
                f"model {self.path} does not know element(s) {', '.join(unknown)} of {template} "
                f"(its type map is {', '.join(self.type_map)}); use --type-map if the names differ"
            )
        return np.array([index[e] for e in elements], dtype=np.int32)

    def check_parameters(self, parameters: Parameters) -> None:
        """A ConfigError naming this model if ``parameters`` do not fit it."""
        parameters.check(self.path, self.dim_fparam, self.dim_aparam, self._default_fparam)

    def evaluate(
        self,
        positions: np.ndarray,
        cell: np.ndarray | None,
        atom_types: np.ndarray,
        parameters: Parameters | None = None,
    ) -> Evaluation:
        """Energy, forces and virial of one structure. ``cell`` None means not periodic;
        ``parameters`` (checked with check_parameters) replace the model's own."""
        extra = {} if parameters is None else {"parameters": parameters}
        batch = self.evaluate_batch(positions[None], None if cell is None else cell[None], atom_types, **extra)
        return Evaluation(float(batch.energy[0]), batch.forces[0], batch.virial[0])

    def warm_up(
        self, positions: np.ndarray, cell: np.ndarray | None, atom_types: np.ndarray, max_calls: int = 4
    ) -> list[float]:
        """Evaluate one structure until the calls stop getting faster; return their times (s).

        A TorchScript model's first calls profile and optimise its graph (about 2.5 s and
        0.7 s for a 32-atom model here, then 0.025 s), a TensorFlow graph's first call sets
        it up; the first call also checks the direct evaluator against ``DeepPot.eval``.
        Done before the driver connects, so that no rank is slow in the first steps of
        the run (the followers, which evaluate only every ``out_freq`` steps, would fall
        seconds behind the leader in a short run)."""
        times: list[float] = []
        for _ in range(max_calls):
            started = time.perf_counter()
            self.evaluate(positions, cell, atom_types)
            times.append(time.perf_counter() - started)
            if len(times) >= 2 and times[-1] > 0.7 * times[-2]:
                break  # no faster than the call before: warm
        return times

    def evaluate_batch(
        self,
        positions: np.ndarray,
        cells: np.ndarray | None,
        atom_types: np.ndarray,
        *,
        aparam: np.ndarray | None = None,
        parameters: Parameters | None = None,
    ) -> BatchEvaluation:
        """Evaluate ``nframes`` structures in one call: positions (nframes, nat, 3),
        cells (nframes, 3, 3) or None; with the model's parameters (or ``parameters``),
        except that ``aparam`` (nframes, nat, dim_aparam), if given, replaces the atomic ones."""
        nframes, nat = positions.shape[:2]
        params = (parameters or self.parameters).arrays(nframes, nat, aparam)
        if self._direct is not None and self._direct.checked:
            return self._direct(positions, cells, atom_types, *params)
        result = self._plain_eval(positions, cells, atom_types, *params)
        if self._direct is not None:
            self._direct = self._direct.verified_against(result, positions, cells, atom_types, params, self.path)
        return result

    def _plain_eval(
        self,
        positions: np.ndarray,
        cells: np.ndarray | None,
        atom_types: np.ndarray,
        fparam: np.ndarray | None = None,
        aparam: np.ndarray | None = None,
    ) -> BatchEvaluation:
        """``DeepPot.eval`` on a batch (the path when the direct one is off or unchecked).
        ``fparam`` (nframes, dim_fparam) and ``aparam`` (nframes, nat, dim_aparam): the
        shapes deepmd-kit's ``DeepEval._standard_input`` (deepmd/infer/deep_eval.py) takes."""
        nframes, nat = positions.shape[:2]
        coords = positions.reshape(nframes, nat * 3)
        boxes = None if cells is None else cells.reshape(nframes, 9)
        energy, forces, virial = self._dp.eval(coords, boxes, atom_types, fparam=fparam, aparam=aparam)[:3]
        return BatchEvaluation(
            energy=np.asarray(energy, dtype=np.float64).reshape(nframes),
            forces=np.asarray(forces, dtype=np.float64).reshape(nframes, nat, 3),
            virial=np.asarray(virial, dtype=np.float64).reshape(nframes, 3, 3),
        )


class _Direct:
    """A backend's evaluator called below ``DeepPot.eval``; used only once checked."""

    backend = "?"
    checked = False

    def __call__(
        self, positions: np.ndarray, cells: np.ndarray | None, atom_types: np.ndarray, fparam=None, aparam=None
    ) -> BatchEvaluation:
        raise NotImplementedError

    def verified_against(
        self, expected: BatchEvaluation, positions, cells, atom_types, params, path: str
    ) -> _Direct | None:
        """Self, marked checked, if it reproduces ``expected`` (``DeepPot.eval`` on the same
        structures) to rounding (1e-10 of each quantity's largest value); None otherwise."""
        if not all(np.isfinite(getattr(expected, k)).all() for k in ("energy", "forces", "virial")):
            return self  # nothing to compare on (atoms on top of each other?): check on the next structure
        try:
            got = self(positions, cells, atom_types, *params)
            # TorchScript's first (profiling) runs may round differently in the last bit, and
            # TensorFlow sums a virial of many atoms in another order when fewer outputs are
            # fetched: compare to rounding on the scale of each quantity
            same = True
            for k in ("energy", "forces", "virial"):
                want = getattr(expected, k)
                scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
                same &= bool(np.allclose(getattr(got, k), want, rtol=1e-10, atol=1e-10 * scale))
        except Exception as exc:
            log.debug("%s: direct %s evaluation failed (%s); using DeepPot.eval", path, self.backend, one_line(exc))
            return None
        if not same:
            log.debug("%s: direct %s evaluation differs from DeepPot.eval; using DeepPot.eval", path, self.backend)
            return None
        self.checked = True
        log.debug("%s: direct %s evaluation matches DeepPot.eval; using it", path, self.backend)
        return self


class _TorchDirect(_Direct):
    """deepmd-kit's PyTorch evaluator called one level below ``DeepPot.eval``.

    ``DeepPot.eval`` does, on every call, work that a driver evaluating the same atoms
    thousands of times needs once: it moves the whole model to the device again
    (``self.dp.to(DEVICE)``: ~120 module visits, ~1 ms), copies the inputs, tiles the
    type array, rebuilds the list of requested outputs and goes through its automatic
    batch splitter. Measured with ``benchmarks/profile_step.py`` on this project's
    models: 10.6 -> 8.8 ms per call at 32 atoms, 30 -> 28.5 ms at 256.

    This calls the same neighbour-list strategy and model ``DeepPot.eval`` calls
    (deepmd-kit 3.2: ``DeepEval._eval_lower_strategy``, or the model itself when no
    strategy is selected) with tensors made once per shape, and the frame and atomic
    parameters as ``DeepEval._eval_model`` passes them (fparam (nframes, dim_fparam),
    aparam (nframes, nat, dim_aparam), float64 on the device). It relies on names private
    to deepmd-kit, so it is used only when they are all there, for plain energy models
    (no spin, no modifier) in float64, and only after the first structure of the run gave
    results equal to ``DeepPot.eval``'s to rounding (1e-10) (checked on every model, every rank); any
    difference, or an error, and the driver keeps ``DeepPot.eval`` for the run.
    ``ENSEMBLE_DRIVER_PLAIN_EVAL=1`` turns it off.
    """

    backend = "PyTorch"

    def __init__(self, deep_eval, torch, device):
        self._de = deep_eval
        self._torch = torch
        self._device = device
        self._types: dict[tuple[int, int], object] = {}

    @classmethod
    def for_model(cls, deep_pot) -> _TorchDirect | None:
        de = getattr(deep_pot, "deep_eval", None)
        if type(de).__module__ != "deepmd.pt.infer.deep_eval":
            return None
        try:
            import torch
            from deepmd.pt.utils.env import DEVICE, GLOBAL_PT_FLOAT_PRECISION

            usable = (
                GLOBAL_PT_FLOAT_PRECISION == torch.float64
                and callable(getattr(de, "_eval_lower_strategy", None))
                and hasattr(de, "_nlist_builder")
                and getattr(de, "modifier", None) is None
                and not getattr(de, "_has_spin", True)
            )
            if not usable:
                return None
            de.dp.to(DEVICE)  # once, instead of on every call
        except Exception as exc:  # an other deepmd-kit: keep DeepPot.eval
            log.debug("direct PyTorch evaluation not available: %s", one_line(exc))
            return None
        return cls(de, torch, DEVICE)

    def __call__(
        self, positions: np.ndarray, cells: np.ndarray | None, atom_types: np.ndarray, fparam=None, aparam=None
    ) -> BatchEvaluation:
        torch = self._torch
        nframes, nat = positions.shape[:2]
        types = self._types.get((nframes, nat))
        if types is None:
            types = torch.as_tensor(np.tile(atom_types, (nframes, 1)), dtype=torch.long, device=self._device)
            self._types = {(nframes, nat): types}  # one shape at a time: batches keep theirs
        coord = torch.as_tensor(np.ascontiguousarray(positions, dtype=np.float64), device=self._device)
        box = None
        if cells is not None:
            box = torch.as_tensor(np.ascontiguousarray(cells, dtype=np.float64), device=self._device)
        fp = None if fparam is None else torch.as_tensor(np.ascontiguousarray(fparam, np.float64), device=self._device)
        ap = None if aparam is None else torch.as_tensor(np.ascontiguousarray(aparam, np.float64), device=self._device)
        de = self._de
        if de._nlist_builder is not None:
            out = de._eval_lower_strategy(coord, types, box, fp, ap, None, False)
        else:
            out = de.dp(coord, types, box=box, do_atomic_virial=False, fparam=fp, aparam=ap, charge_spin=None)
            if isinstance(out, tuple):
                out = out[0]
        return BatchEvaluation(
            energy=out["energy"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes),
            forces=out["force"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes, nat, 3),
            virial=out["virial"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes, 3, 3),
        )


class _TFDirect(_Direct):
    """deepmd-kit's TensorFlow session run directly, below ``DeepPot.eval``.

    For a ``.pb`` model ``DeepPot.eval`` (deepmd-kit 3.2, ``deepmd/tf/infer/deep_eval.py``)
    does on every call: converts and reshapes its inputs, sorts the atoms by type
    (``lexsort``), counts them per type, builds the mesh and the feed dictionary, goes
    through its automatic batch splitter, fetches five outputs (the per-atom energy and
    virial too) and maps each back to the input order. A driver's atoms keep their types
    for the whole run, so here the sort order and every input but the coordinates and the
    cell are made once per shape, by deepmd-kit's own ``_prepare_feed_dict``, and only the
    energy, forces and virial are fetched. Used, like ``_TorchDirect``, for plain energy
    models (no spin, modifier, external field, fparam or aparam) and only after the first
    structure gave ``DeepPot.eval``'s results to rounding.
    """

    backend = "TensorFlow"

    def __init__(self, deep_eval):
        self._de = deep_eval
        out = deep_eval.output_tensors
        self._fetch = [out["energy_redu"], out["energy_derv_r"], out["energy_derv_c_redu"]]
        self._coord = deep_eval.tensors["coord"]
        self._box = deep_eval.tensors["box"]
        self._box_rank = len(self._box.shape)
        self._key: tuple | None = None
        self._types: np.ndarray | None = None
        self._run = None
        self._args: list = []
        self._imap = np.zeros(0, dtype=int)

    @classmethod
    def for_model(cls, deep_pot) -> _TFDirect | None:
        de = getattr(deep_pot, "deep_eval", None)
        if type(de).__module__ != "deepmd.tf.infer.deep_eval":
            return None
        try:
            usable = (
                getattr(de, "neighbor_list", True) is None
                and getattr(de, "modifier_type", True) is None
                and not getattr(de, "has_spin", True)
                and not getattr(de, "has_efield", True)
                and not getattr(de, "has_fparam", True)
                and not getattr(de, "has_aparam", True)
                and callable(getattr(de, "_prepare_feed_dict", None))
                and all(k in de.output_tensors for k in ("energy_redu", "energy_derv_r", "energy_derv_c_redu"))
                and len(de.tensors["box"].shape) in (1, 2)
            )
            return cls(de) if usable else None
        except Exception as exc:  # an other deepmd-kit: keep DeepPot.eval
            log.debug("direct TensorFlow evaluation not available: %s", one_line(exc))
            return None

    def __call__(
        self, positions: np.ndarray, cells: np.ndarray | None, atom_types: np.ndarray, fparam=None, aparam=None
    ) -> BatchEvaluation:
        # fparam and aparam are always None: a model that takes them is not used here
        nframes, nat = positions.shape[:2]
        key = (nframes, nat, cells is None)
        if key != self._key or not np.array_equal(atom_types, self._types):
            # once per shape: deepmd-kit's own sorted types, atom counts and mesh (and,
            # without a cell, its stand-in box)
            feed, imap = self._de._prepare_feed_dict(
                positions.reshape(nframes, nat * 3),
                None if cells is None else cells.reshape(nframes, 9),
                np.tile(atom_types, (nframes, 1)),
            )[:2]
            # a callable made once per shape skips what Session.run redoes on every call
            # (parsing the fetches and the feed dictionary): 0.25 ms of 5.5 at 32 atoms
            # here, median of 600 alternated calls
            placeholders = list(feed)
            self._run = self._de.sess.make_callable(self._fetch, feed_list=placeholders)
            self._args = [feed[p] for p in placeholders]
            self._coord_at = placeholders.index(self._coord)
            self._box_at = placeholders.index(self._box)
            self._imap = np.asarray(imap)
            self._key, self._types = key, np.array(atom_types, copy=True)
        args = list(self._args)
        args[self._coord_at] = positions[:, self._imap, :].astype(np.float64, copy=False).reshape(-1)
        if cells is not None:
            box = np.asarray(cells, dtype=np.float64)
            args[self._box_at] = box.reshape(-1) if self._box_rank == 1 else box.reshape(nframes, 9)
        energy, force, virial = self._run(*args)
        forces = np.empty((nframes, nat, 3))
        forces[:, self._imap, :] = np.asarray(force, dtype=np.float64).reshape(nframes, nat, 3)
        return BatchEvaluation(
            energy=np.asarray(energy, dtype=np.float64).reshape(nframes),
            forces=forces,
            virial=np.asarray(virial, dtype=np.float64).reshape(nframes, 3, 3),
        )


def _direct_evaluator(deep_pot) -> _Direct | None:
    """The direct evaluator for this model's backend, None for DeepPot.eval."""
    import os

    if os.environ.get("ENSEMBLE_DRIVER_PLAIN_EVAL", "") not in ("", "0"):
        return None
    return _TorchDirect.for_model(deep_pot) or _TFDirect.for_model(deep_pot)
