"""The command line as a user meets it: help, early errors, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.paths import IPI_INPUTS, tool


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([tool("ensemble-driver"), *args], capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("ensemble-driver: error:")]


def test_help_does_not_import_the_ml_stack():
    code = (
        "import sys, contextlib, io\n"
        "from ensemble_driver.cli import main\n"
        "for argv in ([], ['run', '--help'], ['demo', '--help'], ['calibrate', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(sorted(m for m in ('deepmd', 'torch', 'ase', 'mpi4py', 'dpdata') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_run_help_teaches():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0
    for needed in (
        "--models",
        "--template",
        "--unix",
        "--sockets-prefix",
        "--connect-timeout",
        "--config",
        "dp_ipi",
        "examples:",
        "exit status:",
        "NEEDINIT",
    ):
        assert needed in proc.stdout


@pytest.mark.parametrize("command", ["run", "devi", "plot", "demo"])
def test_help_paragraphs_fit_the_terminal(command):
    """Descriptions and prose in the epilogs wrap to the terminal's width; indented lines
    (example commands) are kept as written."""
    import os

    proc = subprocess.run(
        [tool("ensemble-driver"), command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "72"},
    )
    assert proc.returncode == 0
    prose = [line for line in proc.stdout.splitlines() if line and not line[0].isspace()]
    assert len(prose) > 2
    assert max(len(line) for line in prose) <= 72, max(prose, key=len)


def test_python_dash_m_works():
    proc = subprocess.run(
        [sys.executable, "-m", "ensemble_driver", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("ensemble-driver ")


def test_missing_model_file_fails_fast(tmp_path):
    proc = run_cli(
        "run",
        "--models",
        str(tmp_path / "nope.pth"),
        "--template",
        str(IPI_INPUTS / "init.xyz"),
        "--unix",
        "--address",
        "x",
        timeout=30,
    )
    assert proc.returncode == 2
    assert error_lines(proc) == [f"ensemble-driver: error: model {tmp_path / 'nope.pth'}: no such file"]


def test_socket_path_too_long_fails_before_loading(model_paths):
    proc = run_cli(
        "run",
        "--models",
        str(model_paths[0]),
        "--template",
        str(IPI_INPUTS / "init.xyz"),
        "--unix",
        "--address",
        "a" * 120,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "the operating system allows at most 107" in error_lines(proc)[0]
    assert "deepmd" not in proc.stderr.lower()  # failed before the model was loaded


@pytest.mark.timeout(180)
def test_no_server_gives_up_after_connect_timeout(model_paths, address):
    proc = run_cli(
        "run",
        "--models",
        str(model_paths[0]),
        "--template",
        str(IPI_INPUTS / "init.xyz"),
        "--unix",
        "--address",
        address,
        "--connect-timeout",
        "1",
    )
    assert proc.returncode == 3
    [line] = error_lines(proc)
    assert f"could not connect to UNIX socket /tmp/ipi_{address} within 1 s" in line


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode == 2 and "run" in proc.stdout


@pytest.mark.parametrize(
    "out_file, message",
    [
        ("{tmp}/missing/model_devi.out", "directory {tmp}/missing does not exist"),
        ("/proc/model_devi.out", "cannot open deviation file /proc/model_devi.out: "),
        ("{tmp}/existing.out", "deviation file {tmp}/existing.out exists; pass --overwrite"),
    ],
)
def test_output_path_errors_come_before_models_load(tmp_path, model_paths, out_file, message):
    """A broken second model shows the order: the path error (2) wins over the model (5)."""
    (tmp_path / "existing.out").write_text("rows of an earlier run\n")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a model")
    out = out_file.format(tmp=tmp_path)
    proc = run_cli(
        "run",
        "--models",
        str(model_paths[0]),
        str(broken),
        "--template",
        str(IPI_INPUTS / "init.xyz"),
        "--unix",
        "--address",
        "x",
        "--out-file",
        out,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert message.format(tmp=tmp_path) in line
    assert (tmp_path / "existing.out").read_text() == "rows of an earlier run\n"


@pytest.mark.timeout(180)
def test_no_inet_server_names_host_and_port(model_paths):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = run_cli(
        "run",
        "--models",
        str(model_paths[0]),
        "--template",
        str(IPI_INPUTS / "init.xyz"),
        "--address",
        "localhost",
        "--port",
        str(port),
        "--connect-timeout",
        "1",
    )
    assert proc.returncode == 3
    [line] = error_lines(proc)
    assert f"could not connect to INET socket localhost:{port} within 1 s" in line
    assert "Connection refused" in line


@pytest.mark.parametrize(
    "script", ["step_cost.py", "overhead.py", "deviation_cost.py", "pimd_batch.py", "profile_step.py", "soak.py"]
)
def test_benchmark_scripts_parse_their_options(script):
    """The benchmarks are not run in CI (they take minutes and their numbers need a quiet
    machine); this keeps them importable and their --help true to their docstring."""
    import subprocess
    import sys

    from support.paths import ROOT

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"])
def test_a_launcher_of_another_mpi_is_refused(model_paths, variable):
    """Open MPI's mpirun (or srun) starting the pip MPICH build: every process would see a
    world of one and run as a lone driver. Refused with one line naming MPI, status 2."""
    env = dict(os.environ, **{variable: "2"})
    env.pop("PMI_SIZE", None)
    proc = subprocess.run(
        [tool("ensemble-driver"), "run", "--models", *map(str, model_paths[:2])]
        + ["--template", str(IPI_INPUTS / "init.xyz"), "--unix", "--address", "never-served"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and proc.stderr.strip() == lines[0], proc.stderr
    assert f"{variable}=2" in lines[0] and "MPI world of one" in lines[0] and "MPICH" in lines[0]


@pytest.mark.timeout(120)
def test_a_backend_that_is_not_installed_is_named_with_the_fix(tmp_path):
    """Every suffix deepmd-kit knows either loads or is refused with one line naming the
    backend and what to install or convert; an unknown suffix too (status 2)."""
    cases = {
        "m.pb": "needs deepmd-kit's TensorFlow backend, which is not installed: install deepmd-kit with TensorFlow",
        "m.savedmodel": "needs deepmd-kit's JAX backend, which is not installed: install JAX",
        "m.pd": "needs deepmd-kit's Paddle backend, which is not installed: install PaddlePaddle",
        "m.savedmodeltf": "needs deepmd-kit's TensorFlow2 backend, which is not installed",
        "m.model": "deepmd-kit has no backend for the suffix .model",
    }
    for name, message in cases.items():
        (tmp_path / name).write_text("not a model")
        proc = run_cli(
            "run", "--models", str(tmp_path / name), "--template", str(IPI_INPUTS / "init.xyz"), "--unix",
            "--address", "never", "--connect-timeout", "1",
        )  # fmt: skip
        lines = error_lines(proc)
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (name, proc.stderr[-2000:])
