#!/usr/bin/env bash
# Installs what the tests need (apt, venv, the test guest, cached) and runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.venv/bin:$PATH"
echo "== test guest" >&2
VIRTBUS_GUEST_DISK=$(bash guest/build.sh | tail -n 1)
export VIRTBUS_GUEST_DISK
echo "== ruff" >&2
ruff check .
echo "== mypy --strict" >&2
mypy --strict proto servicekit scheduler handler launcher ctl tests bench
echo "== pytest" >&2
[ $# -eq 0 ] || exec pytest -p no:cacheprovider "$@"
# The whole suite is two pytest runs side by side. The process-fault test (tests/e2e/test_faults.py)
# spends three of its four minutes waiting out the outages it makes (a handler frozen for 2 minutes,
# nats-server for 1), so it runs while the unit and integration tests do, which mostly wait on
# servers too; every other end-to-end test runs after them, as before. Its output follows the main
# run's. It has a base directory of its own, and is interrupted (so its lab is taken down) if this
# script is.
side_tmp=$(mktemp -d)
pytest -p no:cacheprovider --basetemp="$side_tmp/t" tests/e2e/test_faults.py >"$side_tmp/log" 2>&1 &
side=$!
trap 'kill -INT "$side" 2>/dev/null; wait "$side"; rm -rf "$side_tmp"' INT TERM
set +e
pytest -p no:cacheprovider --ignore=tests/e2e/test_faults.py tests/unit tests/integration tests/e2e
main_rc=$?
wait "$side"
side_rc=$?
trap - INT TERM
echo "== pytest tests/e2e/test_faults.py (it ran beside the unit and integration tests)"
cat "$side_tmp/log"
rm -rf "$side_tmp"
echo "== pytest: exit $main_rc (the suite), $side_rc (tests/e2e/test_faults.py)" >&2
[ "$main_rc" -eq 0 ] && [ "$side_rc" -eq 0 ]
