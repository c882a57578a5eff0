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
exec pytest -p no:cacheprovider "$@"
