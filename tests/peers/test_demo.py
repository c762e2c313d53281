"""`ensemble-driver demo`, the README's first command, after the install."""

from __future__ import annotations

import subprocess

from support.paths import tool


def test_demo_runs_and_says_where_outputs_are(tmp_path):
    outdir = tmp_path / "demo"
    proc = subprocess.run(
        [tool("ensemble-driver"), "demo", "--outdir", str(outdir), "--steps", "5", "--beads", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("model_devi1.out", "model_devi2.out", "pimd.out", "logs/driver.log"):
        assert (outdir / name).exists(), name
    for shown in ("model_devi*.out", "pimd.out", "logs/driver.log"):
        assert f"{outdir / shown}: " in proc.stdout, shown
    assert "demo: model_devi1.out: 2 rows (steps 0..5)" in proc.stdout
    assert "evaluations per bead (request id: count): {0: 6, 1: 6}" in proc.stdout
    # a second run replaces the first one's directory
    again = subprocess.run(
        [tool("ensemble-driver"), "demo", "--outdir", str(outdir), "--steps", "1", "--beads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and not (outdir / "model_devi2.out").exists()


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("do not delete")
    proc = subprocess.run(
        [tool("ensemble-driver"), "demo", "--outdir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "is not a demo directory" in proc.stderr
    assert (tmp_path / "thesis.tex").exists()
