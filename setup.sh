#!/usr/bin/env bash
# Install ensemble-driver and its stack into ./.venv (CPU only), then run something.
#
#   ./setup.sh demo      install, then run a short i-PI path-integral demo
#   ./setup.sh test      install, then run the test suite (what CI runs; two workers)
#   ./setup.sh lint      install, then check lint and formatting with ruff (CI runs it too)
#   ./setup.sh install   install only
#
# The install is done once; later calls reuse .venv unless pyproject.toml, constraints.txt
# or this script changed. It needs Python 3.11 (or $PYTHON) and PyPI; about 3 minutes,
# most of it rebuilding deepmd-kit's C++ ops against the pinned CPU torch (see README).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
venv="$here/.venv"
cmd=${1:-}
shift || true
case "$cmd" in
    demo|test|lint|install) ;;
    *) echo "usage: ./setup.sh demo|test|lint|install [extra arguments]" >&2; exit 2 ;;
esac

python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))'; then
    echo "setup.sh: needs Python >= 3.10 (tested with 3.11); set PYTHON=/path/to/python" >&2
    exit 2
fi

stamp="$venv/.ensemble-driver-installed"
want=$(cat pyproject.toml constraints.txt setup.sh | sha256sum | cut -d' ' -f1)

install() {
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    "${pip[@]}" install --quiet --upgrade pip
    echo "setup.sh: installing torch (CPU build, pinned in constraints.txt)"
    "${pip[@]}" install --quiet -c constraints.txt torch
    if ! "$venv/bin/python" -c 'from deepmd.pt.cxx_op import ENABLE_CUSTOMIZED_OP as ok; assert ok' >/dev/null 2>&1; then
        echo "setup.sh: building deepmd-kit 3.2.0 from its sdist against this torch (~2 minutes)"
        "${pip[@]}" install --quiet -c constraints.txt scikit-build-core packaging dependency_groups \
            cmake ninja setuptools-scm wheel hatch-fancy-pypi-readme
        DP_ENABLE_TENSORFLOW=0 DP_ENABLE_PYTORCH=1 DP_VARIANT=cpu DP_ENABLE_IPI=0 \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
            "${pip[@]}" install --quiet -c constraints.txt --no-build-isolation \
            --no-binary deepmd-kit deepmd-kit==3.2.0
    fi
    echo "setup.sh: installing ensemble-driver (editable) with i-PI, ASE, MPICH, mpi4py"
    "${pip[@]}" install --quiet -c constraints.txt -e ".[pt,test]"
    "$venv/bin/python" -c 'from deepmd.pt.cxx_op import ENABLE_CUSTOMIZED_OP as ok; assert ok, "deepmd custom ops missing"'
    echo "$want" > "$stamp"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    install
fi

export PATH="$venv/bin:$PATH"
case "$cmd" in
    demo) exec ensemble-driver demo "$@" ;;
    # two workers, each taking whole test files (most tests wait on sockets and process
    # start-up as much as they compute), in the order tests/conftest.py gives them (the
    # longest first; xdist would order them by their number of tests); -n 0 (or
    # TEST_WORKERS=0) for one process, e.g. with --pdb
    test) exec python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" ;;
    lint) ruff check "$@" . && exec ruff format --check "$@" . ;;
    install) echo "setup.sh: installed in $venv; activate with: source .venv/bin/activate" ;;
esac
