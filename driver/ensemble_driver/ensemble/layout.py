"""The ranks' roles: which models each rank holds, dealt from the model count, the rank
count, ``--model0-ranks`` and ``--connections`` (:func:`deal_models`).

Ranks 0..R0-1 hold model 0 (``--model0-ranks R0``): the first K of them each serve a
connection to the server (``--connections K``), the others (with one connection) evaluate
slices of i-PI's batches for rank 0; the ensemble ranks (R0 and up) hold the other models
and evaluate them when a connection rank sends a structure. Rank 0 writes every row and
ends the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Which models each rank holds: ``models_of[rank]`` lists model indices. The first
    ``model0_ranks`` ranks hold model 0 (the first ``connections`` of them serve a
    connection each); the ensemble ranks after them hold the other models."""

    models_of: tuple[tuple[int, ...], ...]
    model0_ranks: int = 1
    connections: int = 1

    @property
    def n_models(self) -> int:
        return len({m for models in self.models_of for m in models})

    @property
    def n_ranks(self) -> int:
        return len(self.models_of)

    @property
    def connection_ranks(self) -> list[int]:
        return list(range(self.connections))

    @property
    def batch_replicas(self) -> list[int]:
        """The model-0 ranks that serve no connection: they evaluate slices of batches."""
        return list(range(self.connections, self.model0_ranks))

    @property
    def ensemble_ranks(self) -> list[int]:
        return list(range(self.model0_ranks, self.n_ranks))

    def role(self, rank: int) -> str:
        if rank < self.connections:
            return f"connection {rank}" if self.connections > 1 else "the connection"
        if rank < self.model0_ranks:
            return "batch replica of model 0"
        return "ensemble"


def deal_models(n_models: int, n_ranks: int, model0_ranks: int = 1, connections: int = 1) -> Layout:
    """Model 0 on ranks 0..model0_ranks-1. With one rank, all models there (evaluated in
    turn, as LAMMPS does). Otherwise models 1.. are dealt round-robin over the ranks after
    the model-0 ranks, so a rank that serves the socket holds model 0 only."""
    if n_models < 1:
        raise ConfigError("no model given")
    if connections > model0_ranks:
        raise ConfigError(
            f"--connections {connections} needs a model-0 rank per connection: --model0-ranks must be "
            f"at least {connections} (or left out)"
        )
    if model0_ranks > n_ranks:
        what = f"--connections {connections}" if connections > 1 else f"--model0-ranks {model0_ranks}"
        raise ConfigError(
            f"{what} needs {model0_ranks} MPI ranks for model 0, but this job has {n_ranks}: run under "
            f"mpiexec -n {model0_ranks + n_models - 1}"
        )
    others = n_ranks - model0_ranks
    if n_ranks > 1 and n_models > 1 and others == 0:
        what = f"--connections {connections}" if connections > 1 else f"--model0-ranks {model0_ranks}"
        raise ConfigError(
            f"{n_ranks} MPI ranks all hold model 0 ({what}): models 1..{n_models - 1} need "
            f"ranks of their own; run under mpiexec -n {model0_ranks + n_models - 1}"
        )
    if others > n_models - 1 and n_ranks > 1:
        most = model0_ranks + n_models - 1
        replicas = f" with {model0_ranks} ranks for model 0" if model0_ranks > 1 else ""
        raise ConfigError(
            f"{n_ranks} MPI ranks for {n_models} models{replicas}: each rank holds at least one model; "
            f"use at most {most} ranks (mpiexec -n {most})"
        )
    if n_ranks == 1:
        return Layout((tuple(range(n_models)),))
    ensemble: list[list[int]] = [[] for _ in range(others)]
    for model in range(1, n_models):
        ensemble[(model - 1) % others].append(model)
    return Layout(((0,),) * model0_ranks + tuple(map(tuple, ensemble)), model0_ranks, connections)
