"""A test bed of hosts on one machine: Linux network namespaces joined by veth links.

Each "host" is a network namespace with one interface, ``eth0``, the end of a veth pair
whose other end is a port of a bridge in a namespace of its own (the "switch"), and an
address in 10.213.X.0/24 (X picked per test bed). The host name is the namespace's name:
``tests/support/netns_ssh HOST COMMAND`` runs COMMAND there in a new UTS namespace whose host name
is HOST, and with /etc/netns/HOST/hosts (every host of the bed) bind-mounted over
/etc/hosts by ``ip netns exec``. MPICH's hydra uses the same wrapper as its ssh, so one
``mpiexec`` launches ranks on several hosts.

Nothing is changed in the machine's own network namespace: the veth pairs are created
directly in their namespaces, and the switch has no address. ``TestBed.destroy`` kills
every process left in the hosts, deletes the namespaces (with them the links and the
bridge) and the /etc/netns entries; names carry the creating process's id, so the
leftovers of a test run that was killed are swept by the next one.

What the bed is not: one kernel, one clock, one file system (every host sees the same
files), and links with no latency or loss unless a test adds them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WRAPPER = Path(__file__).resolve().with_name("netns_ssh")
ETC_NETNS = Path("/etc/netns")
STEP_TIMEOUT = 10.0  # s, every ip command and every wait of set-up and tear-down
_NAME = re.compile(r"^edt(\d+)x(\d+)-(\w+)$")
_count = 0

#: The environment of an mpiexec across hosts of the bed. MPICH's default netmod here is
#: UCX, and UCX takes two processes for one machine when they share a kernel (its system
#: id comes from the boot id, not the host name): between hosts of the bed it would use
#: shared memory (sysv, cma) and no byte would cross the links. TCP only, as on a cluster
#: without a fast network; ranks of one host still talk through MPICH's own shared memory.
MPI_OVER_THE_LINKS = {"UCX_TLS": "tcp"}


class Unavailable(Exception):
    """Namespaces cannot be made here (not root, no ip or unshare, or the kernel refuses)."""


def run(argv: Sequence[str], *, timeout: float = STEP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: status {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(condition, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def why_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (the test bed runs ip netns add)"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"no {tool} command (iproute2 / util-linux / hostname)"
    return None


@dataclass(frozen=True)
class Host:
    role: str  # 'a', 'b', ...: the test's name for it
    name: str  # host name = network namespace name
    address: str
    port: str  # its port on the switch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_pids(namespace: str) -> list[int]:
    proc = run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _remove_namespace(namespace: str) -> None:
    """Kill every process in it, wait until none is left, delete it and its /etc/netns dir."""
    for pid in netns_pids(namespace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not netns_pids(namespace), STEP_TIMEOUT, f"the processes of {namespace} to end")
    run(["ip", "netns", "delete", namespace], check=False)
    shutil.rmtree(ETC_NETNS / namespace, ignore_errors=True)


def _namespaces() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Remove the namespaces of test beds whose creating process is gone."""
    swept = []
    for name in _namespaces():
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _remove_namespace(name)
            swept.append(name)
    for entry in ETC_NETNS.glob("edt*") if ETC_NETNS.is_dir() else ():
        match = _NAME.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
    _remove_etc_netns_if_empty()
    return swept


def _remove_etc_netns_if_empty() -> None:
    try:
        ETC_NETNS.rmdir()  # only when empty: another bed, or the machine, may use it
    except OSError:
        pass


def _pick_subnet(tag: int) -> str:
    """10.213.X: an X not on any interface of this namespace (the bed is isolated from
    it anyway: this only keeps addresses unambiguous for a person reading the logs)."""
    used = run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    for k in range(256):
        x = (tag + k) % 254 + 1
        if f" 10.213.{x}." not in used:
            return f"10.213.{x}"
    raise RuntimeError("no free 10.213.X.0/24")


class TestBed:
    """Hosts ``roles`` (default a, b, c) on one switch. Use as a context manager."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, roles: Sequence[str] = ("a", "b", "c")):
        global _count
        _count += 1
        self.tag = f"edt{os.getpid()}x{_count}"
        self.switch = f"{self.tag}-sw"
        self.subnet = _pick_subnet(os.getpid() + _count)
        self.hosts = {
            role: Host(role, f"{self.tag}-{role}", f"{self.subnet}.{k + 1}", f"p{role}") for k, role in enumerate(roles)
        }
        self._made: list[str] = []

    # -- set-up and tear-down ------------------------------------------------------------

    def create(self) -> TestBed:
        reason = why_unavailable()
        if reason:
            raise Unavailable(reason)
        sweep_stale()
        proc = run(["ip", "netns", "add", self.switch], check=False)
        if proc.returncode != 0:
            raise Unavailable(f"ip netns add failed: {proc.stderr.strip()}")
        self._made.append(self.switch)
        try:
            self._build()
            # a container may let namespaces be made but not entered (ip netns exec mounts
            # /sys, unshare --uts needs CAP_SYS_ADMIN): that too means no test bed here
            entered = run(self.on(next(iter(self.hosts)), ["true"]), check=False)
            if entered.returncode != 0:
                raise Unavailable(f"cannot enter a namespace: {entered.stderr.strip()}")
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        sw = ["ip", "-n", self.switch]
        run([*sw, "link", "set", "lo", "up"])
        run([*sw, "link", "add", "br0", "type", "bridge"])  # no STP: ports forward at once
        run([*sw, "link", "set", "br0", "up"])
        hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{h.address} {h.name}\n" for h in self.hosts.values()
        )
        for host in self.hosts.values():
            (ETC_NETNS / host.name).mkdir(parents=True, exist_ok=True)
            (ETC_NETNS / host.name / "hosts").write_text(hosts_file)
            run(["ip", "netns", "add", host.name])
            self._made.append(host.name)
            veth = run(["ip", "link", "add", "eth0", "netns", host.name, "type", "veth", "peer", "name", host.port,
                        "netns", self.switch], check=False)  # fmt: skip
            if veth.returncode != 0:
                raise Unavailable(f"no veth links: {veth.stderr.strip()}")
            run([*sw, "link", "set", host.port, "master", "br0", "up"])
            h = ["ip", "-n", host.name]
            run([*h, "link", "set", "lo", "up"])
            run([*h, "addr", "add", f"{host.address}/24", "dev", "eth0"])
            run([*h, "link", "set", "eth0", "up"])
        for host in self.hosts.values():
            wait_for(lambda host=host: self.link_state(host) == "UP", STEP_TIMEOUT, f"{host.name}'s eth0 to be up")

    def destroy(self) -> None:
        """Remove everything create() made, hosts first; raises if something is left."""
        errors = []
        for name in [n for n in self._made if n != self.switch] + [n for n in self._made if n == self.switch]:
            try:
                _remove_namespace(name)
            except Exception as exc:  # go on with the others
                errors.append(f"{name}: {exc}")
        left = [n for n in _namespaces() if n.startswith(self.tag + "-")]
        left += [str(p) for p in ETC_NETNS.glob(self.tag + "-*")] if ETC_NETNS.is_dir() else []
        self._made = []
        _remove_etc_netns_if_empty()
        if errors or left:
            raise RuntimeError(f"test bed {self.tag} not removed cleanly: {errors + left}")

    def __enter__(self) -> TestBed:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- running things on a host -----------------------------------------------------------

    def host(self, role: str) -> Host:
        return self.hosts[role]

    def on(self, role: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on the host: the wrapper joins its words as ssh does, so quote them."""
        return [str(WRAPPER), self.hosts[role].name, shlex.join([str(a) for a in argv])]

    def mpiexec(self, mpiexec: str, layout: Sequence[tuple[str, int]], hostfile: Path, argv: Sequence[str],
                *options: str) -> list[str]:  # fmt: skip
        """mpiexec started on the first host of ``layout`` ((role, ranks), ...), launching
        on every host of it through the wrapper; the hosts file is written to ``hostfile``."""
        hostfile.write_text("".join(f"{self.hosts[role].name}:{n}\n" for role, n in layout))
        total = sum(n for _, n in layout)
        command = [mpiexec, "-launcher", "ssh", "-launcher-exec", str(WRAPPER), "-f", str(hostfile),
                   "-n", str(total), *options, *argv]  # fmt: skip
        return self.on(layout[0][0], command)

    def pids(self, role: str) -> list[int]:
        return netns_pids(self.hosts[role].name)

    def kill(self, role: str) -> None:
        """SIGKILL every process of the host (a host that dies), and wait until none is left."""
        name = self.hosts[role].name
        for pid in netns_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not netns_pids(name), STEP_TIMEOUT, f"the processes of {name} to end")

    # -- the links ----------------------------------------------------------------------------

    def _link(self, role: str) -> dict:
        host = self.hosts[role]
        return json.loads(run(["ip", "-n", host.name, "-s", "-j", "link", "show", "eth0"]).stdout)[0]

    def link_state(self, host: Host) -> str:
        return json.loads(run(["ip", "-n", host.name, "-j", "link", "show", "eth0"]).stdout)[0]["operstate"]

    def link_bytes(self, role: str) -> tuple[int, int]:
        """(received, sent) bytes of the host's eth0 so far."""
        stats = self._link(role)["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]

    def set_link(self, role: str, up: bool) -> None:
        """The switch port of the host down (a cable pulled at the switch: no FIN, no RST
        reaches anyone; the host's eth0 loses its carrier) or up again."""
        host = self.hosts[role]
        run(["ip", "-n", self.switch, "link", "set", host.port, "up" if up else "down"])
        want = "UP" if up else "DOWN"  # the interface stays administratively up: NO-CARRIER
        wait_for(lambda: self.link_state(host) == want, STEP_TIMEOUT, f"{host.name}'s eth0 to be {want}")
