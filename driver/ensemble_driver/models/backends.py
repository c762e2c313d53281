"""Which deepmd-kit backend a model file needs, and the file ``DeepPot`` is given.

deepmd-kit picks the backend by the file's suffix (``deepmd/backend/``): ``.pth`` and
``.pt`` PyTorch, ``.pte``/``.pt2`` PyTorch-Exportable (pt_expt), ``.pb`` TensorFlow,
``.savedmodel``/``.jax``/``.hlo`` JAX, ``.json``/``.pd`` Paddle, ``.dp``/``.yaml``/``.yml``
its backend-neutral format. The backend-neutral format is evaluated by ``DeepPot`` in
NumPy without derivatives (forces and virial come back NaN, deepmd/dpmodel/infer/
deep_eval.py), so it is converted first, by deepmd-kit's own converter (the hooks of
``dp convert-backend``), to a PyTorch model in a temporary file, which is loaded and then
removed. A backend this environment does not have is refused with one line that names
it and what to install or convert.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, ModelError, one_line

log = logging.getLogger(__name__)

#: deepmd-kit's backend-neutral suffixes (deepmd/backend/dpmodel.py)
NEUTRAL_SUFFIXES = (".dp", ".yaml", ".yml")
#: what to do when a backend is missing here, by deepmd-kit's backend name
INSTALL = {
    "TensorFlow": "install deepmd-kit with TensorFlow (pip install 'deepmd-kit[cpu]'), or convert the model: "
    "dp convert-backend MODEL.pb MODEL.pth",
    "JAX": "install JAX and flax beside deepmd-kit, or convert the model: dp convert-backend MODEL MODEL.pth",
    "Paddle": "install PaddlePaddle beside deepmd-kit, or convert the model: dp convert-backend MODEL MODEL.pth",
    "TensorFlow2": "install TensorFlow beside deepmd-kit, or convert the model: dp convert-backend MODEL MODEL.pth",
    "PyTorch-Exportable": "install deepmd-kit with PyTorch 2.6 or later (the pt_expt backend)",
}


def backend_of(path: str):
    """deepmd-kit's backend class for ``path`` (None if no backend claims the suffix)."""
    from deepmd.backend.backend import Backend

    try:
        return Backend.detect_backend_by_model(path)
    except Exception:
        return None


def check_backend(path: str) -> None:
    """A ConfigError line when no backend reads ``path``, or its backend is not installed."""
    backend = backend_of(path)
    if backend is None:
        raise ConfigError(
            f"model {path}: deepmd-kit has no backend for the suffix {Path(path).suffix or '(none)'} (.pth, .pt, "
            ".pte, .pt2, .pb, .dp, .yaml, .savedmodel, .hlo, .jax, .json, .pd)"
        )
    try:
        available = backend().is_available()
    except Exception:
        available = False
    if not available:
        what = INSTALL.get(backend.name, "install it beside deepmd-kit")
        raise ConfigError(f"model {path} needs deepmd-kit's {backend.name} backend, which is not installed: {what}")


@contextlib.contextmanager
def loadable(path: str):
    """The file to give ``DeepPot`` for ``path``: itself, or, for the backend-neutral
    format, a PyTorch model converted from it by deepmd-kit (removed on exit)."""
    if not path.lower().endswith(NEUTRAL_SUFFIXES):
        yield path
        return
    from deepmd.backend.backend import Backend

    with tempfile.TemporaryDirectory(prefix="ensemble-driver-") as tmp:
        converted = os.path.join(tmp, Path(path).stem + ".pth")
        try:
            data = Backend.detect_backend_by_model(path)().serialize_hook(path)
            Backend.get_backend("pytorch")().deserialize_hook(converted, data)
        except Exception as exc:
            raise ModelError(f"cannot convert model {path} to PyTorch: {one_line(exc)}") from None
        log.debug("%s: converted to PyTorch by deepmd-kit (%s)", path, converted)
        yield converted
