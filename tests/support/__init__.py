"""What the tests share besides fixtures (fixtures live in the conftest.py files and are
never imported): ``from support.paths import ROOT``.

- :mod:`support.paths`: the checkout's folders and files, and :func:`support.paths.tool`;
- :mod:`support.models`: deepmd-kit's own evaluation (the reference) and its conversions;
- :mod:`support.sockets`: a free TCP port;
- :mod:`support.waiting`: the one polling loop, a condition with a deadline (not for
  :mod:`support.netns`, which a test imports in a process of its own, without tests/ on
  its path);
- :mod:`support.harness`: a real i-PI with real drivers, what it wrote, and the check of
  what it received against the model's own answers;
- :mod:`support.mpi`: a command under ``mpiexec``;
- :mod:`support.ipi_runs`: i-PI's binary trajectories, each bead's deviation file and the
  rows the ensemble must write on those positions;
- :mod:`support.ipi_inputs`: i-PI inputs written by the tests and run with ``--ipi-input``,
  and the rows expected of them;
- :mod:`support.ase_runs`: ASE's socket server with the driver as its client (structures,
  the launcher);
- :mod:`support.faults`: a run made to fail, watched from outside (its processes, whole
  rows, the driver under mpiexec as ``python -m ensemble_driver``);
- :mod:`support.netns`: hosts made of network namespaces (``netns_ssh``, their "ssh");
- :mod:`support.hosts`: the ensemble runs across those hosts (the port, the driver's
  command line);
- :mod:`support.tap`: a tap on one i-PI connection, to kill a driver at a chosen point;
- :mod:`support.venvs`: virtual environments of their own (DP-GEN, dpgen2, TensorFlow);
- :mod:`support.ipi_files`, :mod:`support.calibration`, :mod:`support.docs`: the helpers
  of the modules whose tests are split between tests/unit/ and tests/peers/;
- scripts the tests run as processes, by path: ``ase_server.py``, ``mpi_probe.py``,
  ``failing_model.py``, ``dpgen_select.py``, ``dpgen2_select.py``, ``netns_ssh``.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml's pytest section), so any
test module, in any folder, imports these as ``support.<module>``. A test module never
imports another: a helper that a second module needs moves here."""
