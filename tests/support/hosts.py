"""The ensemble runs across the hosts of the test bed (tests/support/netns.py) that
tests/peers/test_hosts.py and tests/peers/test_host_faults.py make: i-PI's port and
outputs, the beads, and the driver's command line."""

from __future__ import annotations

from pathlib import Path

from support.paths import tool

NBEADS = 4
OUT_FREQ = 2  # rows at steps 0, 2, 4, 6 (test_hosts' 6 steps)
PORT = 31415  # every host has its own ports
# i-PI's potential every step: the dynamics of the two runs, compared too
OUTPUTS = ("<properties stride='1' filename='out'> [ step, potential{electronvolt} ] </properties>",)


def driver(models, workdir: Path, address: str, port: int) -> list[str]:
    return [
        tool("ensemble-driver"),
        "run",
        "--models",
        *map(str, models),
        "--template",
        str(workdir / "init.xyz"),
        "--address",
        address,
        "--port",
        str(port),
        "--connect-timeout",
        "120",
        "--nbeads",
        str(NBEADS),
        "--out-freq",
        str(OUT_FREQ),
        "-v",
    ]
