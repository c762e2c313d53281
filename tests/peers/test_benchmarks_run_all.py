"""benchmarks/run_all.py: the quick run writes every table, and the committed page is
exactly what the committed results render to (the page cannot drift from results/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from support.paths import ROOT

RUN_ALL = ROOT / "benchmarks" / "run_all.py"
PAGE = ROOT / "benchmarks" / "README.md"
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_all  # noqa: E402

# the column of each table that holds a time, which must be a positive number on every row
TIME_COLUMN = {
    "step_cost": "ms/step (runs)",
    "overhead": "step ms",
    "deviation_cost": "ms/step",
    "pimd_batch": "ms/step",
    "scale": "ms/step (runs)",
    "page_faults": "wall ms / call",
    "direct_vs_eval": "direct ms",
    "devi_speed": "s per run (runs)",
}


def block(page: str, name: str) -> str:
    match = re.search(rf"<!-- table:{name} -->\n(.*?)<!-- /table:{name} -->", page, re.S)
    assert match, f"no table:{name} markers on the page"
    return match.group(1)


def table_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and data rows of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, text
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return split[0], split[2:]


def test_help_teaches():
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for needed in ("--quick", "--only", "--render-only", "--check", "--results", "examples:", "index.json"):
        assert needed in proc.stdout
    for bench in run_all.BENCHMARKS:
        assert bench.name in proc.stdout


def test_the_page_has_a_place_for_every_table():
    page = PAGE.read_text()
    for name in [b.name for b in run_all.BENCHMARKS] + ["targets", "machines"]:
        block(page, name)


def test_committed_page_is_what_the_committed_results_render():
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--render-only", "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    rendered = run_all.render_page(PAGE.read_text(), run_all.Results(run_all.RESULTS), PAGE.parent)
    assert rendered.encode() == PAGE.read_bytes()


@pytest.mark.timeout(1200)  # ~6 min alone on 2 cores; twice that when the machine is busy
def test_quick_run_writes_every_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--quick", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1190,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    page = (tmp_path / "README.md").read_text()
    index = json.loads((tmp_path / "index.json").read_text())
    quick = [b.name for b in run_all.BENCHMARKS if b.quick is not None]
    assert sorted(index) == sorted(quick) == sorted(TIME_COLUMN)
    for name in quick:
        assert index[name]["quick"] is True
        assert index[name]["command"][0].startswith("benchmarks/")
        for ext in ("json", "md", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
        text = block(page, name)
        assert text.startswith("Measured ") and "--quick" in text and f"![{name}]({name}.png)" in text
        header, rows = table_rows(text)
        column = header.index(TIME_COLUMN[name])
        assert rows
        for row in rows:
            assert float(row[column].split()[0]) > 0, (name, row)
    # what --quick does not run says so, and the targets table has a row per target
    assert "No results in" in block(page, "step_cost_2048")
    header, rows = table_rows(block(page, "targets"))
    assert header == ["target", "figure now", "met / missed"] and len(rows) == len(run_all.TARGETS)
    ase = next(row for row in rows if row[0].startswith("time per step no more than ASE"))
    assert re.fullmatch(r"\d+\.\d\dx at 32 atoms \(`step_cost`, \d{4}-\d\d-\d\d\)", ase[1]), ase
    assert ase[2].startswith(("met", "missed"))


@pytest.mark.parametrize("script", ["page_faults.py", "direct_vs_eval.py"])
def test_hot_path_scripts_parse_their_options(script):
    """run_all.py runs these too (tests/peers/test_cli.py checks the other scripts' --help)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:") and "--out" in proc.stdout
