"""Templates, settings files (ours and dp_ipi's) and element matching, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.paths import IPI_INPUTS

from ensemble_driver.errors import ConfigError
from ensemble_driver.run.command import template_elements
from ensemble_driver.run.config import RunConfig
from ensemble_driver.run.settings import build_config, load_config_file
from ensemble_driver.wire.template import read_template
from ensemble_driver.wire.transport import InetAddress, UnixAddress, make_address


def test_ipi_xyz_template():
    template = read_template(IPI_INPUTS / "init.xyz")
    assert template.natoms == 32
    assert set(template.labels) == {"Cu", "Au"}
    assert template.labels[:2] == ("Cu", "Au")
    assert template.periodic


def test_ipi_xyz_with_labels_ase_cannot_read(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text("3\n# CELL(H): 10 0 0 0 10 0 0 0 10 positions{angstrom}\nOW 0 0 0\nHW1 0 0 1\nHW2 0 1 0\n")
    assert read_template(path).labels == ("OW", "HW1", "HW2")


def test_template_geometry_in_angstrom(tmp_path):
    """The template's own structure (for warming the models up) in Angstrom, whatever
    units the i-PI xyz comment line declares (atomic units when none)."""
    from ensemble_driver.wire.units import BOHR_ANGSTROM

    path = tmp_path / "w.xyz"
    path.write_text("2\n# CELL(H): 10 0 0 0 11 0 0 0 12 cell{angstrom}\nCu 1 2 3\nAu 0 0 1\n")
    template = read_template(path)
    np.testing.assert_allclose(
        template.positions, [[1 * BOHR_ANGSTROM, 2 * BOHR_ANGSTROM, 3 * BOHR_ANGSTROM], [0, 0, BOHR_ANGSTROM]]
    )
    np.testing.assert_allclose(template.cell, np.diag([10.0, 11.0, 12.0]))
    path.write_text("1\n# CELL(abcABC): 5 6 7 90 90 90 positions{nanometer} cell{atomic_unit}\nCu 0.1 0 0\n")
    template = read_template(path)
    np.testing.assert_allclose(template.positions, [[1.0, 0, 0]])
    np.testing.assert_allclose(template.cell, np.diag([5.0, 6.0, 7.0]) * BOHR_ANGSTROM, atol=1e-12)
    path.write_text("1\n# CELL(abcABC): 5 5 5 90 90 90 positions{furlong}\nCu 0 0 0\n")
    with pytest.raises(ConfigError, match=r"line 2: unit positions\{furlong\} not supported"):
        read_template(path)


def test_ase_templates(tmp_path):
    from ase.build import molecule

    water = molecule("H2O")
    water.write(tmp_path / "w.xyz")
    template = read_template(tmp_path / "w.xyz")
    assert template.labels == ("O", "H", "H") and not template.periodic
    water.cell = np.eye(3) * 8
    water.pbc = True
    water.write(tmp_path / "w.extxyz")
    template = read_template(tmp_path / "w.extxyz")
    assert template.periodic
    np.testing.assert_allclose(template.positions, water.positions)
    np.testing.assert_allclose(template.cell, water.cell.array)


@pytest.mark.parametrize(
    "models, argv, expected",
    [
        (("m0.pth",), [], False),  # one model: no request ids needed, no INIT per step
        (("m0.pth", "m1.pth"), [], True),  # per-bead deviation rows need them
        (("m0.pth",), ["--init-each"], True),
        (("m0.pth", "m1.pth"), ["--no-init-each"], False),
    ],
)
def test_init_each_default_follows_the_models(models, argv, expected):
    from ensemble_driver.cli import build_parser
    from ensemble_driver.run.settings import settings_from_options

    args = build_parser().parse_args(["run", "--models", *models, "--template", "t.xyz", *argv])
    assert build_config({}, settings_from_options(args)).init_each is expected


def test_every_setting_has_an_option_and_a_json_type():
    """The option surface is one table: each setting of RunConfig (a group's, such as
    DeviationKind's, in its place) is a command-line option of run (argparse dest = the
    setting's name) or a file-only key, and has a JSON type."""
    from ensemble_driver.cli import build_parser
    from ensemble_driver.run.settings import _ANNOTATIONS, FILE_ONLY, JSON_TYPES, SETTINGS

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    dests = {a.dest for a in run._actions}
    for f in SETTINGS.values():
        assert f.name in dests or f.name in FILE_ONLY, f"{f.name}: no option of run"
        assert _ANNOTATIONS[f.name] in JSON_TYPES, f"{f.name}: no JSON type for {_ANNOTATIONS[f.name]}"
    options = {a.dest for a in run._actions if a.option_strings} - {"help", "config", "quiet"}
    assert options <= set(SETTINGS), options - set(SETTINGS)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("3\n# CELL(abcABC): 5 5 5 90 90 90\nCu 0 0 0\n", "announces 3 atoms but has 1 atom lines"),
        ("x\n# CELL(abcABC): 5 5 5 90 90 90\n", "line 1: expected the number of atoms"),
        ("1\n# CELL(abcABC): 5 5 5 90 90 90\nCu 0 0\n", "line 3: expected 'label x y z'"),
        ("this is not a structure\n", "ASE cannot read it"),
    ],
)
def test_bad_templates_name_the_file(tmp_path, content, message):
    path = tmp_path / "t.xyz"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        read_template(path)
    assert str(path) in str(err.value)


def test_dp_ipi_file_is_accepted(tmp_path):
    """The keys of deepmd-kit's dp_ipi input map onto ours."""
    path = tmp_path / "dp_ipi.json"
    path.write_text(
        json.dumps(
            {
                "verbose": False,
                "use_unix": True,
                "port": 31415,
                "host": "water",
                "graph_file": "graph.pb",
                "coord_file": "conf.xyz",
                "atom_type": {"OW": 0, "HW1": 1, "HW2": 1},
            }
        )
    )
    config = build_config(load_config_file(path), {})
    assert config.models == ("graph.pb",)
    assert config.template == "conf.xyz"
    assert config.unix and config.address == "water" and config.port == 31415
    assert config.atom_type == {"OW": 0, "HW1": 1, "HW2": 1}
    assert config.verbose == 0


def test_command_line_wins_over_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"models": ["a.pth", "b.pth"], "template": "t.xyz", "connect-timeout": 5}))
    config = build_config(load_config_file(path), {"models": ("c.pth",), "port": 1234, "unix": None})
    assert config.models == ("c.pth",) and config.port == 1234 and config.connect_timeout == 5.0
    assert config.template == "t.xyz"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"model": "a.pth"}', "unknown key(s) 'model'"),
        ('{"port": "80"}', "'port' must be an integer"),
        ('{"atom_type": {"O": -1}}', "'atom_type' must be an object"),
        ('{"use_unix": 1}', "'unix' must be true or false"),
    ],
)
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_config_file(path)
    assert str(path) in str(err.value)


def test_missing_settings():
    from ensemble_driver.models.parameters import ParameterOptions

    with pytest.raises(ConfigError, match="no model given"):
        RunConfig(template="t").validated()
    with pytest.raises(ConfigError, match="no template given"):
        RunConfig(models=("m",)).validated()
    # i-PI's input gives the atoms but no per-atom arrays: those come from a template
    with pytest.raises(ConfigError, match="--aparam-array q reads the per-atom values .* give --template FILE"):
        RunConfig(models=("m",), ipi_input="input.xml", parameters=ParameterOptions(aparam_array="q")).validated()


def test_atom_type_maps_labels_through_model0_type_map():
    from ensemble_driver.wire.template import Template

    template = Template("w.xyz", ("OW", "HW1", "HW2"), True)
    assert template_elements(template, {"OW": 0, "HW1": 1, "HW2": 1}, ["O", "H"]) == ["O", "H", "H"]
    with pytest.raises(ConfigError, match="does not map label.s. HW2"):
        template_elements(template, {"OW": 0, "HW1": 1}, ["O", "H"])
    with pytest.raises(ConfigError, match="maps 'OW' to type 2, but the model has only 2 types"):
        template_elements(template, {"OW": 2, "HW1": 1, "HW2": 1}, ["O", "H"])


def test_addresses():
    assert make_address(True, "cuau", None, "/tmp/ipi_") == UnixAddress("/tmp/ipi_cuau")
    assert make_address(False, "node7", 31415, "/tmp/ipi_") == InetAddress("node7", 31415)
    with pytest.raises(ConfigError, match="is 209 bytes long; the operating system allows at most 107"):
        make_address(True, "x" * 200, None, "/tmp/ipi_")
    with pytest.raises(ConfigError, match="--port is required"):
        make_address(False, "localhost", None, "/tmp/ipi_")
    with pytest.raises(ConfigError, match="not a TCP port"):
        make_address(False, "localhost", 70000, "/tmp/ipi_")
    for v6 in ("::1", "fe80::1", "2001:db8::7"):
        with pytest.raises(ConfigError, match=f"--address {v6}: IPv6 is not supported \\(i-PI listens on IPv4 only\\)"):
            make_address(False, v6, 31415, "/tmp/ipi_")


def test_unix_path_limit_is_the_os_limit(tmp_path):
    """A path of MAX_UNIX_PATH_BYTES binds; one byte more is refused by the OS itself."""
    import os
    import socket

    from ensemble_driver.wire.transport import MAX_UNIX_PATH_BYTES

    base = str(tmp_path) + "/"
    for extra, ok in ((0, True), (1, False)):
        path = base + "s" * (MAX_UNIX_PATH_BYTES + extra - len(base))
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.bind(path)
                bound = True
                os.unlink(path)
            except OSError:
                bound = False
        assert bound is ok, (len(path), ok)
