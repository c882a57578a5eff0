#!/usr/bin/env bash
# The main job: install everything, bring up a 2-node lab on this machine, import the test guest
# as quay.io/kubevirt/cirros-container-disk-demo, apply the seed testvm unchanged, start it, wait
# until it is Running and print its boot marker from the serial console. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test guest (its kernel: minutes on a first run) builds while the other packages and the venv
# install: its own packages first.
bash scripts/setup.sh --apt-guest
echo "== building (or reusing) the test guest; the other packages and the venv install meanwhile" >&2
guest_out=$(mktemp)
bash guest/build.sh >"$guest_out" &
guest_build=$!
trap 'kill "$guest_build" 2>/dev/null || true; rm -f "$guest_out"' EXIT  # a failed install stops the build too
bash scripts/setup.sh --apt
bash scripts/setup.sh
wait "$guest_build" || { echo "lab: the test guest did not build" >&2; exit 1; }
disk=$(tail -n 1 "$guest_out")
export PATH="$PWD/.venv/bin:$PATH"
examples=${VIRTBUS_EXAMPLES:-$PWD/examples}  # the repository's copies of the seed manifests

echo "== bringing up the lab" >&2
virtbus lab up --nodes "${LAB_NODES:-2}" --probe-kernel "$(dirname "$disk")/bzImage"
virtbus image upload quay.io/kubevirt/cirros-container-disk-demo --file "$disk"
# Re-applying the manifest (running: false) would stop a running testvm, as in KubeVirt: only once.
virtbus get vms testvm >/dev/null 2>&1 || virtbus apply -f "$examples/testvm-masquerade.yaml"
virtbus start testvm --wait --timeout 300
virtbus get vmis -o wide
echo "== serial console of testvm, up to the boot marker" >&2
virtbus console testvm --log --until VIRTBUS-GUEST-READY --timeout 180 | grep -a -m1 VIRTBUS-GUEST-READY
echo "== lab is up: try 'virtbus get vms', 'virtbus console testvm --log'; 'virtbus lab down' removes it" >&2
