"""What the tests share besides fixtures (fixtures live in the conftest.py files and are
never imported): ``from support.paths import ROOT``.

- :mod:`support.paths`: the checkout's folders and files, and :func:`support.paths.tool`;
- :mod:`support.models`: deepmd-kit's own evaluation (the reference) and its conversions;
- :mod:`support.sockets`: a free TCP port;
- :mod:`support.harness`: a real i-PI with real drivers, and what it wrote;
- :mod:`support.netns`: hosts made of network namespaces (``netns_ssh``, their "ssh");
- :mod:`support.tap`: a tap on one i-PI connection, to kill a driver at a chosen point;
- :mod:`support.venvs`: virtual environments of their own (DP-GEN, dpgen2, TensorFlow);
- :mod:`support.ipi_files`, :mod:`support.calibration`, :mod:`support.docs`: the helpers
  of the modules whose tests are split between tests/unit/ and tests/peers/;
- scripts the tests run as processes, by path: ``ase_server.py``, ``mpi_probe.py``,
  ``failing_model.py``, ``dpgen_select.py``, ``dpgen2_select.py``, ``netns_ssh``.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml's pytest section), so any
test module, in any folder, imports these as ``support.<module>``."""
