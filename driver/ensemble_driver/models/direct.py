"""The fast path: a backend's evaluator called one level below ``DeepPot.eval``.

Each evaluator relies on names private to deepmd-kit, so it is made only when they are
all there, and used only after it reproduced ``DeepPot.eval`` on the run's first
structure (:meth:`Direct.verified_against`). torch and deepmd are imported here only
inside the evaluators, after :mod:`deepmd` loaded the model.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import one_line
from .results import BatchEvaluation

log = logging.getLogger(__name__)


class Direct:
    """A backend's evaluator called below ``DeepPot.eval``; used only once checked."""

    backend = "?"
    checked = False

    def __call__(
        self,
        positions: np.ndarray,
        cells: np.ndarray | None,
        atom_types: np.ndarray,
        fparam=None,
        aparam=None,
        charge_spin=None,
        *,
        shared: dict | None = None,
    ) -> BatchEvaluation:
        raise NotImplementedError

    def verified_against(
        self, expected: BatchEvaluation, positions, cells, atom_types, params, path: str
    ) -> Direct | None:
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


class TorchDirect(Direct):
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
        self._types: dict[tuple[int, bytes], object] = {}
        # the neighbour list's size per type, asked of the model once, for its builder (as
        # DeepEval._eval_lower_strategy asks it on every call); none without a builder
        builder = deep_eval._nlist_builder is not None
        self._sel = [int(s) for s in deep_eval.dp.model["Default"].get_sel()] if builder else []

    @classmethod
    def for_model(cls, deep_pot) -> TorchDirect | None:
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

    def neighbour_key(self, atom_types: np.ndarray, periodic: bool) -> tuple | None:
        """What this model's neighbour list depends on, None when it builds its own:
        models of equal keys evaluating the same frames can share one list
        (``DeepEval._eval_lower_strategy`` builds it from the coordinates, types, box,
        cut-off and ``sel`` alone, with the builder deepmd-kit chose)."""
        de = self._de
        if de._nlist_builder is None or getattr(de, "_uses_edge_schema", True):
            return None
        key = (type(de._nlist_builder).__name__, float(de.rcut), tuple(self._sel))
        return (*key, np.asarray(atom_types).tobytes(), periodic)

    def __call__(
        self,
        positions: np.ndarray,
        cells: np.ndarray | None,
        atom_types: np.ndarray,
        fparam=None,
        aparam=None,
        charge_spin=None,
        *,
        shared: dict | None = None,
    ) -> BatchEvaluation:
        """``shared``: a dict kept by the caller for these frames, in which models of one
        ``neighbour_key`` leave their neighbour list for each other."""
        torch = self._torch
        nframes, nat = positions.shape[:2]
        # the types of a batch, kept while batches of these atoms come (devi and calibrate
        # give one model frames of several systems: the key holds the types, not only the shape)
        shape = (nframes, np.asarray(atom_types).tobytes())
        types = self._types.get(shape)
        if types is None:
            types = torch.as_tensor(np.tile(atom_types, (nframes, 1)), dtype=torch.long, device=self._device)
            self._types = {shape: types}  # one at a time: batches keep theirs
        coord = torch.as_tensor(np.ascontiguousarray(positions, dtype=np.float64), device=self._device)
        box = None
        if cells is not None:
            box = torch.as_tensor(np.ascontiguousarray(cells, dtype=np.float64), device=self._device)
        fp, ap, chg = (self._tensor(x) for x in (fparam, aparam, charge_spin))  # chg: (nframes, 2)
        de = self._de
        key = None if shared is None else self.neighbour_key(atom_types, cells is not None)
        if key is not None:
            if key not in shared:
                shared[key] = de._nlist_builder.build(coord, types, box, de.rcut, self._sel)
            out = self._lower(shared[key], fp, ap, chg)
        elif de._nlist_builder is not None:
            out = de._eval_lower_strategy(coord, types, box, fp, ap, chg, False)
        else:
            out = de.dp(coord, types, box=box, do_atomic_virial=False, fparam=fp, aparam=ap, charge_spin=chg)
            if isinstance(out, tuple):
                out = out[0]
        return BatchEvaluation(
            energy=out["energy"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes),
            forces=out["force"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes, nat, 3),
            virial=out["virial"].detach().cpu().numpy().astype(np.float64, copy=False).reshape(nframes, 3, 3),
        )

    def _tensor(self, values):
        if values is None:
            return None
        return self._torch.as_tensor(np.ascontiguousarray(values, np.float64), device=self._device)

    def _lower(self, built: tuple, fp, ap, chg) -> dict:
        """The model on a neighbour list already built: what ``DeepEval._eval_lower_strategy``
        (deepmd-kit 3.2) does after building it, the outputs keyed by the backend's names."""
        from deepmd.pt.model.model.transform_output import communicate_extended_output

        de = self._de
        ext_coord, ext_atype, nlist, mapping = built
        # the model marks its coordinates as needing gradients: each model its own view
        lower = de.dp.model["Default"].forward_common_lower(
            ext_coord.detach(), ext_atype, nlist, mapping, fparam=fp, aparam=ap, do_atomic_virial=False, charge_spin=chg
        )
        predict = communicate_extended_output(lower, de.output_def, mapping, do_atomic_virial=False)
        return {b: predict[i] for i, b in de._OUTDEF_DP2BACKEND.items() if predict.get(i) is not None}


class TFDirect(Direct):
    """deepmd-kit's TensorFlow session run directly, below ``DeepPot.eval``.

    For a ``.pb`` model ``DeepPot.eval`` (deepmd-kit 3.2, ``deepmd/tf/infer/deep_eval.py``)
    does on every call: converts and reshapes its inputs, sorts the atoms by type
    (``lexsort``), counts them per type, builds the mesh and the feed dictionary, goes
    through its automatic batch splitter, fetches five outputs (the per-atom energy and
    virial too) and maps each back to the input order. A driver's atoms keep their types
    for the whole run, so here the sort order and every input but the coordinates and the
    cell are made once per shape, by deepmd-kit's own ``_prepare_feed_dict``, and only the
    energy, forces and virial are fetched. Used, like ``TorchDirect``, for plain energy
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
    def for_model(cls, deep_pot) -> TFDirect | None:
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
        self,
        positions: np.ndarray,
        cells: np.ndarray | None,
        atom_types: np.ndarray,
        fparam=None,
        aparam=None,
        charge_spin=None,
        *,
        shared: dict | None = None,  # not used: TensorFlow builds its list inside the graph
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


def direct_evaluator(deep_pot) -> Direct | None:
    """The direct evaluator for this model's backend, None for DeepPot.eval."""
    import os

    if os.environ.get("ENSEMBLE_DRIVER_PLAIN_EVAL", "") not in ("", "0"):
        return None
    return TorchDirect.for_model(deep_pot) or TFDirect.for_model(deep_pot)
