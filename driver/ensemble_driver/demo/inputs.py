"""Adapt one of the shipped i-PI inputs (socket address, steps, beads, outputs).

Used by ``ensemble-driver demo`` and by the tests, which run the very files users get
from ``ipi_inputs/`` with only what a run needs changed.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SocketSettings:
    """The <ffsocket> fields to change; None leaves a field as it is in the file."""

    address: str | None = None
    mode: str | None = None  # 'unix' or 'inet'
    port: int | None = None
    consolidate_messages: bool | None = None
    timeout: float | None = None
    batch_size: int | None = None
    matching: str | None = None  # 'auto', 'any' or 'lock': which client gets which request
    parameters: str | None = None  # the force field's <parameters>, e.g. "{fparam: 0.9}"


def _set_child(parent: ET.Element, tag: str, text: str) -> None:
    child = parent.find(tag)
    if child is None:
        child = ET.SubElement(parent, tag)
    child.text = f" {text} "


def prepare_input(
    src: str | Path,
    dst: str | Path,
    *,
    socket: SocketSettings = SocketSettings(),
    steps: int | None = None,
    nbeads: int | None = None,
    prefix: str | None = None,
    sockets_prefix: str | None = None,
    outputs: Sequence[str] | None = None,
    extra_outputs: Sequence[str] = (),
    floatformat: str | None = None,
    verbosity: str | None = None,
) -> Path:
    """Write a modified copy of the i-PI input ``src`` to ``dst``.

    The initial structure file it names is copied next to ``dst``. ``outputs`` replaces
    the <output> children with the given XML snippets; ``extra_outputs`` appends to them.
    """
    src, dst = Path(src), Path(dst)
    tree = ET.parse(src)
    root = tree.getroot()
    if sockets_prefix is not None:
        root.set("sockets_prefix", sockets_prefix)
    if floatformat is not None:
        root.set("floatformat", floatformat)
    if verbosity is not None:
        root.set("verbosity", verbosity)
    ffsocket = root.find("ffsocket")
    if ffsocket is None:  # i-PI's committee wraps its sockets
        ffsocket = root.find("ffcommittee/ffsocket")
    if ffsocket is None:
        raise ValueError(f"{src}: no <ffsocket>")
    if socket.mode is not None:
        ffsocket.set("mode", socket.mode)
    if socket.matching is not None:
        ffsocket.set("matching", socket.matching)
    for tag, value in (
        ("address", socket.address),
        ("port", socket.port),
        ("timeout", socket.timeout),
        ("batch_size", socket.batch_size),
        ("parameters", socket.parameters),
    ):
        if value is not None:
            _set_child(ffsocket, tag, str(value))
    if socket.consolidate_messages is not None:
        _set_child(ffsocket, "consolidate_messages", str(socket.consolidate_messages).lower())
    if steps is not None:
        _set_child(root, "total_steps", str(steps))
    initialize = root.find("system/initialize")
    if nbeads is not None:
        if initialize is None:
            raise ValueError(f"{src}: no <system><initialize>")
        initialize.set("nbeads", str(nbeads))
    output = root.find("output")
    if output is not None:
        if prefix is not None:
            output.set("prefix", prefix)
        if outputs is not None:
            for child in list(output):
                output.remove(child)
        for snippet in list(outputs or ()) + list(extra_outputs):
            output.append(ET.fromstring(snippet))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if initialize is not None:
        init_file = initialize.find("file")
        if init_file is not None and init_file.text:
            name = init_file.text.strip()
            source = (src.parent / name) if not Path(name).is_absolute() else Path(name)
            target = dst.parent / Path(name).name
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            init_file.text = f" {target.name} "
    tree.write(dst, encoding="unicode")
    return dst
