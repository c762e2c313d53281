"""Run settings: one typed record of every setting of ``run``, with its default and its
checks (where the values come from, the command line and a ``--config`` file, is
:mod:`settings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..deviation import DeviationKind
from ..errors import ConfigError
from ..models.devices import CHOICES
from ..models.parameters import ParameterOptions
from ..outputs.sink import DeviationOptions

DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"


@dataclass(frozen=True)
class RunConfig:
    """Everything ``ensemble-driver run`` needs. Units: seconds for timeouts."""

    models: tuple[str, ...] = ()
    template: str | None = None
    ipi_input: str | None = None  # i-PI's input or RESTART: atoms, socket, beads and request ids
    forcefield: str | None = None  # the <ffsocket> served, when the input has several
    resume: bool = False  # with a RESTART as ipi_input: cut the outputs to its step, then append
    start_ipi: bool = False  # rank 0 runs i-PI on ipi_input (or its newest checkpoint): run/ipi_process
    status_every: float = 60.0  # rank 0's status line every this many seconds (0: none): run/progress
    unix: bool = False
    address: str | tuple[str, ...] = "localhost"  # several: one per connection
    port: int | None = None
    sockets_prefix: str = DEFAULT_SOCKETS_PREFIX
    connect_timeout: float = 60.0
    # how long the server may be silent while the driver waits for it (0: forever); also
    # how long another rank may take to answer. An hour: never cuts a slow but live run
    # (see docs/failures.md, "Silence")
    server_timeout: float = 3600.0
    type_map: tuple[str, ...] | None = None
    head: str | None = None  # the head of every multi-task model
    atom_type: Mapping[str, int] | None = field(default=None, hash=False)
    pbc: bool | None = None  # None: from the template
    init_every_step: bool | None = None  # None: only with two or more models (see init_each)
    verbose: int = 0
    device: str = "auto"  # devices.CHOICES: a GPU per rank when the node has them
    # scale-out: connections to the server, and ranks holding model 0
    connections: int = 1
    model0_ranks: int | None = None  # None: one per connection
    # frame and atomic parameters of every model (LAMMPS's fparam/aparam), --charge-spin;
    # --aparam-array names an extended-XYZ array of the template
    parameters: ParameterOptions = field(default_factory=ParameterOptions)
    # the ensemble's deviation output
    out_file: str = "model_devi.out"
    out_freq: int = 100
    out_freq_near: int = 0  # a row every this many steps for a bead at or above trust_lo (0: off)
    nbeads: int = 1
    bead_files: str = "dpgen"
    traj_files: str | None = None  # dumps.PRESETS or a pattern: a LAMMPS dump frame beside every row
    kind: DeviationKind = field(default_factory=DeviationKind)  # --atomic, --relative, --relative-v
    extras: bool = False
    committee_json: bool = False
    bias_uncertainty: float | None = None  # TAU (eV): answer E_0 - TAU sigma_E
    alpha: float = 1.0  # the committee's calibration (ensemble-driver calibrate), as i-PI's <alpha>
    overwrite: bool = False
    append: bool = False
    step_offset: int = 0
    # candidate selection (DP-GEN's trust levels)
    trust_lo: float | None = None
    trust_hi: float | None = None
    trust_lo_v: float | None = None
    trust_hi_v: float | None = None
    # the stop rule: after this many failed rows, create exit_file (i-PI's EXIT)
    stop_after_failed: int = 0
    exit_file: str | None = None

    def trust_levels(self):
        """The trust levels, or None when candidates are not selected."""
        from ..outputs.selection import trust_levels

        return trust_levels(self.trust_lo, self.trust_hi, self.trust_lo_v, self.trust_hi_v)

    @property
    def init_each(self) -> bool:
        """Ask for INIT after every evaluation? The request ids it brings (bead indices)
        are needed only for per-bead deviation rows, so by default only with two or more
        models; under i-PI each INIT costs ~0.3 ms of a step (benchmarks/overhead.py)."""
        return self.init_every_step if self.init_every_step is not None else len(self.models) > 1

    def _check_monitoring(self) -> None:
        """--out-freq-near and the stop rule."""
        if self.out_freq_near < 0:
            raise ConfigError(f"--out-freq-near must be >= 0 (0: off), got {self.out_freq_near}")
        if self.out_freq_near:
            if not self.out_freq_near < self.out_freq:
                raise ConfigError(
                    f"--out-freq-near {self.out_freq_near} must be below --out-freq {self.out_freq} (it makes the "
                    "rows denser)"
                )
            if self.trust_lo is None:
                raise ConfigError("--out-freq-near switches on at --trust-lo: give --trust-lo and --trust-hi")
            if self.connections > 1:
                raise ConfigError("--out-freq-near cannot be used with --connections > 1 yet")
        if self.stop_after_failed < 0:
            raise ConfigError(f"--stop-after-failed must be >= 0 (0: off), got {self.stop_after_failed}")
        if self.stop_after_failed and self.trust_lo is None:
            raise ConfigError("--stop-after-failed counts rows classified failed: give --trust-lo and --trust-hi")
        if bool(self.stop_after_failed) != (self.exit_file is not None):
            raise ConfigError(
                "--stop-after-failed N and --exit-file PATH go together: the rule creates PATH (i-PI's EXIT file, "
                "in i-PI's working directory) after N failed rows"
            )

    def with_ipi_input(self, ipi) -> RunConfig:
        """The settings an i-PI input (:class:`wire.ipi_input.IpiInput`) gives where the
        user gave none: the beads and the socket. A contradiction is an error."""
        where = f"--ipi-input {ipi.path}"
        beads = len(ipi.ids.series)
        if self.nbeads not in (1, beads):
            per_system = ", ".join(
                f"{prefix or 'its system'}: {sum(s.prefix == prefix for s in ipi.ids.series)}"
                for prefix in ipi.ids.systems
            )
            raise ConfigError(
                f"--nbeads {self.nbeads}, but in {where} forcefield {ipi.socket.name!r} sees {beads} bead(s) "
                f"({per_system}; ring-polymer contraction counted): leave --nbeads out"
            )
        if ipi.socket.batch_size > 1 and len(ipi.ids.systems) > 1:
            raise ConfigError(
                f"{where}: forcefield {ipi.socket.name!r} serves {len(ipi.ids.systems)} systems with i-PI's batched "
                "transport, whose batches do not say which structure is whose: use <batch_size>1</batch_size>, or "
                "one forcefield per system"
            )
        if self.connections > 1 and ipi.ids.clones:
            raise ConfigError(
                f"{where}: a geometry optimiser evaluates one structure at a time, whose steps are told apart in "
                f"the order they come: use one connection, not --connections {self.connections}"
            )
        changes: dict[str, Any] = {"nbeads": beads}
        if not (self.unix or self.port is not None or self.addresses != ("localhost",)):
            socket = ipi.socket
            changes.update(unix=socket.mode == "unix", address=socket.address)
            changes["port"] = None if socket.mode == "unix" else socket.port
            if self.sockets_prefix == DEFAULT_SOCKETS_PREFIX:
                changes["sockets_prefix"] = socket.sockets_prefix
        return replace(self, **changes)

    def deviation_options(self) -> DeviationOptions:
        """What the rows and their files are, as ``devi`` takes them too (--resume appends)."""
        return DeviationOptions.of(self, trust=self.trust_levels(), append=self.append or self.resume)

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,) if isinstance(self.address, str) else tuple(self.address)

    @property
    def model0_rank_count(self) -> int:
        """Ranks holding model 0: --model0-ranks, or one per connection."""
        return self.model0_ranks if self.model0_ranks is not None else self.connections

    def validated(self) -> RunConfig:
        """Check what can be checked without touching files; return self."""
        if not self.models:
            raise ConfigError("no model given: pass --models FILE [FILE ...] (or 'models' in --config)")
        if self.template is None and self.ipi_input is None:
            raise ConfigError(
                "no template given: pass --ipi-input i-PI's input.xml, or --template FILE (or 'template' in --config)"
            )
        if self.forcefield is not None and self.ipi_input is None:
            raise ConfigError("--forcefield names a forcefield of the i-PI input: it needs --ipi-input")
        if self.start_ipi and self.ipi_input is None:
            raise ConfigError("--start-ipi starts i-PI on its input: give it with --ipi-input INPUT")
        if self.start_ipi and (self.overwrite or self.append):
            raise ConfigError(
                "--start-ipi continues a stopped run by itself, from i-PI's newest checkpoint, and cuts the outputs "
                "to match: leave out --resume, --overwrite and --append"
            )
        if not (self.status_every >= 0 and math.isfinite(self.status_every)):
            raise ConfigError(f"--status-every must be >= 0 seconds (0: no status lines), got {self.status_every}")
        if self.resume and self.ipi_input is None:
            raise ConfigError("--resume continues from the step of i-PI's RESTART: give it with --ipi-input RESTART")
        if self.resume and (self.overwrite or self.append):
            raise ConfigError("--resume appends to the files it cut: leave out --overwrite and --append")
        if self.ipi_input is not None and self.step_offset:
            raise ConfigError(
                "--step-offset is for servers other than i-PI: with --ipi-input the rows carry i-PI's steps "
                "(a RESTART's from its <step>; continue one with --resume)"
            )
        if self.device not in CHOICES:
            raise ConfigError(f"--device must be one of {', '.join(CHOICES)}, got {self.device!r}")
        if self.connect_timeout < 0:
            raise ConfigError(f"--connect-timeout must be >= 0, got {self.connect_timeout}")
        if not self.server_timeout >= 0:
            raise ConfigError(f"--server-timeout must be >= 0 (0: wait forever), got {self.server_timeout}")
        if self.out_freq < 0:
            raise ConfigError(f"--out-freq must be >= 0 (0: no deviation), got {self.out_freq}")
        if self.nbeads < 1:
            raise ConfigError(f"--nbeads must be >= 1, got {self.nbeads}")
        if self.connections < 1:
            raise ConfigError(f"--connections must be >= 1, got {self.connections}")
        if self.model0_ranks is not None and self.model0_ranks < 1:
            raise ConfigError(f"--model0-ranks must be >= 1, got {self.model0_ranks}")
        if len(self.addresses) not in (1, self.connections):
            raise ConfigError(
                f"--address gives {len(self.addresses)} addresses for --connections {self.connections}: give one "
                "(every connection to it) or one per connection"
            )
        if self.connections > 1 and self.model0_rank_count != self.connections:
            raise ConfigError(
                f"--model0-ranks {self.model0_ranks} with --connections {self.connections}: each connection has one "
                "model-0 rank (extra ones serve only i-PI's batched transport, which needs one connection); "
                "leave --model0-ranks out"
            )
        self.deviation_options().validated()
        self.parameters.validated()
        if self.parameters.aparam_array is not None and self.template is None:
            raise ConfigError(
                f"--aparam-array {self.parameters.aparam_array} reads the per-atom values from the extended-XYZ "
                "template: give --template FILE (with --ipi-input too)"
            )
        if self.step_offset < 0:
            raise ConfigError(f"--step-offset must be >= 0, got {self.step_offset}")
        if self.step_offset and not self.append:
            raise ConfigError("--step-offset continues a restarted run: it needs --append")
        if self.committee_json and len(self.models) < 2:
            raise ConfigError("--committee-json sends every model's results: it needs two or more --models")
        if self.committee_json and self.extras:
            raise ConfigError("--committee-json and --extras exclude each other (both fill the extras)")
        if self.bias_uncertainty is not None:
            if len(self.models) < 2 or not math.isfinite(self.bias_uncertainty) or self.bias_uncertainty < 0:
                raise ConfigError(
                    f"--bias-uncertainty {self.bias_uncertainty:g}: TAU is an energy >= 0 (eV), and the bias needs two "
                    "or more --models (it is their spread)"
                )
            if self.committee_json:
                raise ConfigError("--bias-uncertainty and --committee-json exclude each other (both set the answer)")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"--alpha must be a positive number, got {self.alpha:g}")
        if self.alpha != 1.0 and not (self.committee_json or self.bias_uncertainty is not None):
            raise ConfigError(
                "--alpha scales the committee's spread for --committee-json or --bias-uncertainty: "
                "without either it would change nothing (the deviation rows never change)"
            )
        self._check_monitoring()
        if self.traj_files is not None and (self.out_freq == 0 or len(self.models) < 2):
            raise ConfigError(
                "--traj-files writes the structure of every deviation row: it needs two or more --models and "
                "--out-freq > 0"
            )
        if self.trust_levels() is not None and (self.out_freq == 0 or len(self.models) < 2):
            raise ConfigError(
                "--trust-lo/--trust-hi select candidates by the deviation: they need "
                "two or more --models and --out-freq > 0"
            )
        return self
