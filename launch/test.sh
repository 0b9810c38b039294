#!/usr/bin/env bash
# The test suite (CI runs exactly this). Extra arguments go to pytest, e.g. `-m slow`.
# Tests run in LUAB_TEST_WORKERS pytest-xdist worker processes (default 2; 0: in this process),
# a test file per worker, so that a module's shared fixtures are built once: most of a test's
# time is XLA compiling on one thread, and two workers keep both cores of a CI machine busy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -q -n "${LUAB_TEST_WORKERS:-2}" --dist loadfile "$@" tests
