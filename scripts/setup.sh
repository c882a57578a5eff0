#!/usr/bin/env bash
# Installs everything virtbus needs on a fresh Debian 12 machine (root): apt packages, then a venv
# at .venv with the package (with --test, the test tools; with --compose, what the compose lab needs;
# with --apt, only the apt packages; with --apt-guest, only those the test guest's build needs).
# Idempotent: quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# the test guest (guest/build.sh): kernel from Debian's source, busybox initramfs, a syslinux-booted disk
GUEST_PACKAGES=(
  linux-source-6.1 busybox-static build-essential bc flex bison libelf-dev cpio xz-utils lz4 kmod
  syslinux syslinux-common mtools dosfstools
)
APT_PACKAGES=(
  libvirt-daemon-system libvirt-dev qemu-system-x86 qemu-utils
  nftables iproute2 iputils-arping isc-dhcp-client genisoimage pkg-config gcc python3-dev curl
  openssl  # a live migration's TLS certificate, made by its target's launcher (launcher.migrationtls)
  python3-venv  # Debian's python3 makes no venv without it (ensurepip); a minimal install lacks it
  prometheus  # the tests scrape a lab with a real one
  systemd  # systemd-analyze checks the units of deploy/systemd (a real host runs them)
  "${GUEST_PACKAGES[@]}"
  isolinux  # the ISO-install e2e test boots the test guest from an El Torito ISO
  haproxy  # every node's HTTP proxy for Routes and Ingresses (handler.router); its own unit stays unused
  dnsmasq-base  # the lab's DHCP server on its layer-2 segments (NADs without ipam)
  openvswitch-switch  # type: ovs NADs; the lab runs ovsdb-server/ovs-vswitchd per node (userspace datapath)
  libxml2-utils  # xmllint, which virt-xml-validate runs: the unit tests check domain XML against libvirt's schema
  novnc  # the web console (virtbus console-web) serves its noVNC
)

# the compose lab (compose/lab.sh, and its test): podman with runc, and debootstrap for its image
COMPOSE_PACKAGES=(podman runc netavark aardvark-dns catatonit debootstrap)
TEST_PACKAGES=(chromium)  # the web console's test looks at the page in a real headless browser
# Debian's nats-server (2.9) beside the wheel's: tests/integration/test_watch_through_deletions.py runs on both
TEST_PACKAGES+=(nats-server)
case "${1:-}" in --test|--compose) APT_PACKAGES+=("${COMPOSE_PACKAGES[@]}") ;; esac
case "${1:-}" in --test) APT_PACKAGES+=("${TEST_PACKAGES[@]}") ;; esac
# --apt-guest: scripts/lab.sh starts the guest's build (minutes of compiling) before the other
# packages install, which they then do beside it
case "${1:-}" in --apt-guest) APT_PACKAGES=("${GUEST_PACKAGES[@]}") ;; esac

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # once per first run: lab.sh's two installs (the guest's packages, then the rest) share one update
  if ! find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -newermt '-30 minutes' 2>/dev/null | grep -q .; then
    apt-get update -q >&2
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --apt, --apt-guest: the packages only (scripts/lab.sh builds the test guest's kernel while the
# other packages and the venv install)
case "${1:-}" in --apt | --apt-guest) exit 0 ;; esac

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
[ "${1:-}" = "--compose" ] && extra="[compose]"
stamp=".venv/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e ".$extra" >&2
  touch "$stamp"
fi
# The project's own modules compiled to bytecode now, once. Where PYTHONDONTWRITEBYTECODE is set (it is
# on the machines this project is built on) Python writes none itself, and every `virtbus` command, lab
# process and launcher would compile them from source again: ~40 ms more a command (bench/cli_start.py).
# A module edited later is compiled afresh in memory until this runs again, never run stale.
.venv/bin/python -m compileall -q -j0 proto servicekit scheduler handler launcher ctl bench >/dev/null
