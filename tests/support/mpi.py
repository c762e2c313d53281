"""Commands under the ``mpiexec`` installed beside the test interpreter (MPICH from PyPI)."""

from __future__ import annotations

from support.paths import tool


def mpiexec(nranks: int, command: list[str]) -> list[str]:
    return [tool("mpiexec"), "-n", str(nranks), *command]
