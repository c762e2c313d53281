"""The DeePMD adapter: a model file loaded through ``deepmd.infer.DeepPot``.

Only this module and :mod:`direct` import deepmd, and only when a model is loaded (importing deepmd's
PyTorch backend costs several seconds). ``deepmd.infer.DeepPot`` picks the backend by
the file suffix (``.pth`` PyTorch, ``.pb`` TensorFlow, ``.savedmodel`` JAX, ...), so every
backend installed beside the driver works.

Units are DeePMD's (:mod:`results`).

Frame and atomic parameters (a model trained with ``numb_fparam``/``numb_aparam``) are
given to a model when it is made (:class:`Parameters`) and passed to deepmd-kit on every
call, as LAMMPS's ``pair_style deepmd ... fparam V aparam V`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError, one_line
from ..signals import Stopped
from .backends import NEUTRAL_SUFFIXES, check_backend, loadable
from .direct import direct_evaluator
from .parameters import NO_PARAMETERS, Parameters
from .results import BatchEvaluation, Evaluation

log = logging.getLogger(__name__)


def one_backend_thread() -> None:
    """Limit the calling thread's PyTorch intra-op threads to one (``devi``'s worker
    threads, each evaluating its own chunk of frames), and run TorchScript there as
    :func:`_plain_torchscript` says."""
    import torch

    torch.set_num_threads(1)
    _plain_torchscript()


def _plain_torchscript() -> None:
    """On the CPU, run a TorchScript model's graph as it is, without the profiling
    executor's optimisation passes (for the calling thread: the flag is per thread).

    The profiling executor spends a model's first three calls profiling and rewriting its
    graph (on the CPU TorchScript fuses nothing, so the rewritten graph is no faster):
    measured on m0.pth, one thread, 2026-12-05, the first three calls took 360-420 ms each
    at 256 atoms and 320-420 ms at 32, about 1.1 s per model and process, against 56 and
    23 ms for the first call without the passes; afterwards the calls cost the same (256
    atoms ~30 ms, 32 atoms 6.5-6.9 ms, medians of 150 calls). The numbers are DeepPot.eval's
    in the same thread (the direct path is still checked against it). On a GPU the passes
    fuse kernels, so they are kept there; ``ENSEMBLE_DRIVER_JIT_OPTIMIZE=1`` keeps them on
    the CPU too."""
    import os

    import torch

    if os.environ.get("ENSEMBLE_DRIVER_JIT_OPTIMIZE", "") not in ("", "0"):
        return
    from deepmd.pt.utils.env import DEVICE

    if DEVICE.type == "cpu":
        torch._C._set_graph_executor_optimize(False)  # what torch.jit.optimized_execution(False) sets


def check_model_file(path: str | Path) -> None:
    """Fail early, before any backend is imported, if a model file is missing."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model {path}: no such file")
    if path.is_file() and not path.stat().st_size:
        raise ConfigError(f"model {path}: the file is empty")


def multitask_heads(path: str) -> list[str] | None:
    """The heads of a multi-task checkpoint (a .pt whose stored model parameters have a
    ``model_dict``, as deepmd/pt/infer/deep_eval.py reads them); None for other files."""
    if not path.endswith(".pt"):
        return None
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        params = state.get("model", state)["_extra_state"]["model_params"]
    except Exception:
        return None
    return list(params["model_dict"]) if "model_dict" in params else None


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
    torch_model = path.lower().endswith((".pth", ".pt", ".pte", ".pt2", *NEUTRAL_SUFFIXES))
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
        head: str | None = None,
    ):
        self.path = str(path)
        self.head = head
        check_model_file(path)
        try:
            DeepPot = _import_deep_pot(self.path)
        except Stopped:
            raise  # a signal during the (slow) import is not an import failure
        except Exception as exc:
            raise ModelError(f"cannot import deepmd-kit to load {self.path}: {one_line(exc)}") from None
        check_backend(self.path)
        if self.path.lower().endswith((".pth", ".pt", *NEUTRAL_SUFFIXES)):
            _plain_torchscript()
        try:
            # deepmd-kit reads `head` for a multi-task checkpoint (.pt) and ignores it for
            # other files (deepmd/pt/infer/deep_eval.py, DeepEval.__init__)
            with loadable(self.path) as load_path:
                self._dp = DeepPot(load_path, head=head) if head is not None else DeepPot(load_path)
        except ModelError:
            raise
        except Exception as exc:
            heads = multitask_heads(self.path)
            if heads and head is None:
                raise ConfigError(
                    f"model {self.path} is a multi-task model with heads {', '.join(heads)}: choose one with "
                    "--head NAME"
                ) from None
            if heads:
                raise ConfigError(f"model {self.path} has no head {head!r}; its heads: {', '.join(heads)}") from None
            raise ModelError(f"cannot load model {self.path}: {one_line(exc)}") from None
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
        # a DPA-3 conditioned on charge and spin (deepmd/infer/deep_eval.py: has_chg_spin_ebd)
        self._chg_spin = (
            bool(getattr(self._dp, "has_chg_spin_ebd", lambda: False)()),
            bool(getattr(self._dp, "has_default_chg_spin", lambda: False)()),
        )
        self.dim_charge_spin = 2 if self._chg_spin[0] else 0  # a WORK slot for the server's charge and spin
        self.check_parameters(parameters)
        self.parameters = parameters
        self.rcut = float(self._dp.get_rcut())
        self._direct = direct_evaluator(self._dp)
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
        parameters.check(self.path, self.dim_fparam, self.dim_aparam, self._default_fparam, self._chg_spin)

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
        shared: dict | None = None,
    ) -> BatchEvaluation:
        """Evaluate ``nframes`` structures in one call: positions (nframes, nat, 3),
        cells (nframes, 3, 3) or None; with the model's parameters (or ``parameters``),
        except that ``aparam`` (nframes, nat, dim_aparam), if given, replaces the atomic ones.
        ``shared``: a dict the caller keeps for these frames and passes to every model
        that evaluates them, so that models with the same neighbour list build it once
        (the direct PyTorch path; see ``TorchDirect.neighbour_key``)."""
        nframes, nat = positions.shape[:2]
        params = (parameters or self.parameters).arrays(nframes, nat, aparam)
        if self._direct is not None and self._direct.checked:
            return self._direct(positions, cells, atom_types, *params, shared=shared)
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
        charge_spin: np.ndarray | None = None,
    ) -> BatchEvaluation:
        """``DeepPot.eval`` on a batch (the path when the direct one is off or unchecked).
        ``fparam`` (nframes, dim_fparam) and ``aparam`` (nframes, nat, dim_aparam): the
        shapes deepmd-kit's ``DeepEval._standard_input`` (deepmd/infer/deep_eval.py) takes."""
        nframes, nat = positions.shape[:2]
        coords = positions.reshape(nframes, nat * 3)
        boxes = None if cells is None else cells.reshape(nframes, 9)
        extra = {} if charge_spin is None else {"charge_spin": charge_spin}  # (nframes, 2), a NumPy array
        energy, forces, virial = self._dp.eval(coords, boxes, atom_types, fparam=fparam, aparam=aparam, **extra)[:3]
        return BatchEvaluation(
            energy=np.asarray(energy, dtype=np.float64).reshape(nframes),
            forces=np.asarray(forces, dtype=np.float64).reshape(nframes, nat, 3),
            virial=np.asarray(virial, dtype=np.float64).reshape(nframes, 3, 3),
        )
