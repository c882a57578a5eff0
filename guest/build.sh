#!/usr/bin/env bash
# Builds (once) and caches virtbus's own test guest, then prints the absolute path of its raw
# disk image as the LAST line on stdout; all progress goes to stderr.
#
#   disk=$(guest/build.sh)            # a few minutes the first time (kernel), ~1 s after that
#   guest/smoke.py "$disk"            # boots it in plain qemu: marker, shell, ACPI power-off
#
# The guest: Linux 6.1 (tinyconfig + guest/kernel.config, from Debian's linux-source-6.1) and a
# busybox-static initramfs (guest/rootfs/: /init, udhcpc script, power-button handler; and
# guest/udpecho.c, the UDP echo busybox lacks) on a
# whole-disk FAT image ("superfloppy") booted by syslinux; SeaBIOS boots it as any disk (virtio,
# sata, ...), e.g. q35/TCG with 32 MiB or more. Serial console lines, see guest/rootfs/init:
#   VIRTBUS-GUEST-READY           services are up (httpd :80, echo :7 TCP and UDP, acpid, shell on ttyS0)
#   VIRTBUS-GUEST-IP <addr>       udhcpc got a lease on eth0
#
# Cache (${VIRTBUS_CACHE:-$HOME/.cache/virtbus}):
#   kernel/<kkey>/{bzImage,config,gen_init_cpio,build.log}
#       kkey = sha256(guest/kernel.config + linux-source-6.1 version); not build.sh, so a change
#       to how the kernel is built here needs a (comment) change in kernel.config to take effect
#   guest/<key>/{disk.img,bzImage,initrd.cpio,syslinux.cfg,build-info}
#       key = sha256(build.sh + kernel.config + udpecho.c + rootfs/ + busybox/syslinux versions)
# Entries are built in a temp dir next to them and renamed into place, so an interrupted
# build never leaves a partial entry; a lock serializes concurrent builds.
# Needs (scripts/setup.sh): linux-source-6.1 busybox-static build-essential bc flex bison lz4
# libelf-dev cpio xz-utils syslinux syslinux-common mtools dosfstools.
set -euo pipefail

exec 3>&1 1>&2 # stdout is for the final path only

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${VIRTBUS_CACHE:-$HOME/.cache/virtbus}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
KSRC_PKG=linux-source-6.1
KSRC_TAR=/usr/src/linux-source-6.1.tar.xz
BUSYBOX=/bin/busybox
SYSLINUX_BIOS=/usr/lib/syslinux/modules/bios
# ttyS0 last: /dev/console, the markers. no_timer_check: a guest whose QEMU gets no CPU for a
# moment while it boots (a node busy launching, its guests below the launches) would otherwise
# panic "IO-APIC + timer doesn't work!"; cloud images boot VMs with it for the same reason.
# scsi_mod.scan=manual: the kernel does not probe the SCSI controller's 256 targets before init (0.3 s of
# a TCG boot, every VM having one for hotplug); the init scans after its marker (guest/rootfs/init), and
# a disk hotplugged later comes by virtio-scsi's own event either way.
# tsc=reliable: TCG's TSC runs off the host's clock, and without it the kernel checks it against the HPET
# twice a second for ever (the clocksource watchdog): an idle guest's QEMU woke 13 times a second, 5 with
# it, and took ~0.45 % of a core instead of ~0.8 % (docs/benchmarks.md, 2026-12-07 16:15).
KCMDLINE="console=tty0 console=ttyS0 quiet no_timer_check scsi_mod.scan=manual tsc=reliable"

log() { echo "guest/build: $*"; }
die() { echo "guest/build: error: $*"; exit 1; }
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
short_sha() { sha256sum | cut -c1-16; }

for tool in make gcc bc flex bison cpio lz4 xz tar flock mkfs.vfat mcopy mdir syslinux; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done
[ -f "$KSRC_TAR" ] || die "$KSRC_TAR missing (apt-get install $KSRC_PKG)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
[ -f "$SYSLINUX_BIOS/ldlinux.c32" ] || die "syslinux BIOS modules missing (apt-get install syslinux-common)"

# ---- cache keys -------------------------------------------------------------------------------
KKEY=$({ cat "$HERE/kernel.config"; echo "$KSRC_PKG $(pkgver "$KSRC_PKG")"; } | short_sha)
KDIR=$CACHE/kernel/$KKEY

rootfs_digest() { # names, exec bits and contents of guest/rootfs/, in a stable order
  (cd "$HERE/rootfs" && find . -type f -o -type l | LC_ALL=C sort | while read -r f; do
    if [ -L "$f" ]; then echo "link $f $(readlink "$f")"
    else echo "file $f $([ -x "$f" ] && echo x || echo -) $(sha256sum <"$f" | cut -d' ' -f1)"; fi
  done)
}
KEY=$({
  cat "$HERE/build.sh" "$HERE/kernel.config" "$HERE/udpecho.c"
  rootfs_digest
  echo "$KSRC_PKG $(pkgver "$KSRC_PKG") busybox $(pkgver busybox-static) syslinux $(pkgver syslinux)"
} | short_sha)
GDIR=$CACHE/guest/$KEY

# One builder at a time (flock). Temp dirs left by a killed build (SIGKILL skips its cleanup)
# are stale whenever we hold the lock.
mkdir -p "$CACHE/kernel" "$CACHE/guest"
exec 9>"$CACHE/.build.lock"
sweep() { rm -rf "$CACHE"/kernel/.tmp-* "$CACHE"/guest/.tmp-*; }
cached() {
  [ -f "$GDIR/disk.img" ] || return 1
  if compgen -G "$CACHE/*/.tmp-*" >/dev/null && flock -n 9; then sweep; fi
  log "cached: $GDIR"
  echo "$GDIR/disk.img" >&3
}
cached && exit 0
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting"
  flock 9
  cached && exit 0
fi
sweep
TMPS=() # temp dirs to remove on exit
LONG="" # pid of a running long step, stopped on exit
TICKER="" # pid of the progress lines of a running long step
cleanup() {
  if [ -n "$TICKER" ]; then kill "$TICKER" 2>/dev/null || true; wait "$TICKER" 2>/dev/null || true; fi
  if [ -n "$LONG" ]; then kill -TERM "$LONG" 2>/dev/null || true; wait "$LONG" 2>/dev/null || true; fi
  [ "${#TMPS[@]}" -eq 0 ] || rm -rf "${TMPS[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a long step in the background and waits for it interruptibly, so that INT/TERM stop the
# build at once rather than after the step (GNU make passes SIGTERM on to its jobs).
run_long() {
  local rc=0
  "$@" &
  LONG=$!
  wait "$LONG" || rc=$?
  LONG=""
  return "$rc"
}

# A first build compiles the kernel for minutes (5 on a slow 2-core box) and make's own lines go to
# build.log: a line on stderr every 20 s says how far it is, counting make's step lines ("  CC
# path") against what a build of guest/kernel.config makes (1,665 of them on linux-source-6.1).
KBUILD_STEPS=1665
ticker() { # build.log, start (in $SECONDS)
  local n pct tick=0
  while sleep 1; do # 1 s steps: a ticker stopped mid-wait leaves no sleep behind for long
    tick=$((tick + 1))
    [ $((tick % 20)) -eq 0 ] || continue
    n=$(grep -cE '^  [A-Z0-9]+ ' "$1") || true
    pct=$((n * 100 / KBUILD_STEPS))
    log "kernel $KKEY: $n of ~$KBUILD_STEPS build steps ($((pct > 99 ? 99 : pct)) %) at $((SECONDS - $2)) s"
  done
}

# Renames a finished temp dir into place (rename(2): all or nothing). Loses quietly to an
# entry that is already there.
publish() { # tmpdir final
  chmod 755 "$1"
  mv -T "$1" "$2" 2>/dev/null || [ -d "$2" ] || die "cannot rename $1 to $2"
}

# ---- kernel -----------------------------------------------------------------------------------
# x86_64 lays its kernel out for 2 MiB pages: entry text, read-only data and data each begin on a 2 MiB
# boundary. The guest's ELF image was 14 MB for 4.5 MB of code and data, the rest int3 and zero
# padding, and the boot decompresses all of it into the guest's RAM before moving the segments into
# place: 13.8 of the 25.7 MiB of RAM a test guest had touched by its marker (every page of it a page of
# its QEMU, on the node). Those parts are aligned to 4 KiB here, as on 32-bit x86, and mapped with 4 KiB
# pages; the 2 MiB alignment of entry text serves page-table isolation, which the guest does not build.
# (The ELF segments' own 2 MiB alignment stays: the decompressor refuses anything else.) Each edit is
# checked, so a source that no longer reads so fails the build instead of quietly keeping the padding.
compact_image() {
  local lds=$1/arch/x86/kernel/vmlinux.lds.S line
  local -a wide=($'#define X86_ALIGN_RODATA_BEGIN\t. = ALIGN(HPAGE_SIZE);' $'\t\t. = ALIGN(HPAGE_SIZE);\t\t\t\t\\'
    $'#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PMD_SIZE);' $'#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);')
  for line in "${wide[@]}"; do
    [ "$(grep -c -x -F -e "$line" "$lds")" = 1 ] || die "arch/x86/kernel/vmlinux.lds.S has no line '$line' to compact"
  done
  sed -i -e 's/^\(#define X86_ALIGN_RODATA_BEGIN\t\)\. = ALIGN(HPAGE_SIZE);$/\1. = ALIGN(PAGE_SIZE);/' \
    -e 's/^\(\t\t\)\. = ALIGN(HPAGE_SIZE);\(\t\t\t\t\\\)$/\1. = ALIGN(PAGE_SIZE);\2/' \
    -e 's/^\(#define ALIGN_ENTRY_TEXT_\(BEGIN\|END\)\t\)\. = ALIGN(PMD_SIZE);$/\1. = ALIGN(PAGE_SIZE);/' "$lds"
  for line in "${wide[@]}"; do
    ! grep -q -x -F -e "$line" "$lds" || die "arch/x86/kernel/vmlinux.lds.S still has '$line'"
  done
}

build_kernel() {
  local tmp src start want missing=()
  tmp=$(mktemp -d "$CACHE/kernel/.tmp-$KKEY.XXXXXX"); TMPS+=("$tmp")
  start=$SECONDS
  log "kernel $KKEY: extracting $KSRC_TAR (what an x86 tinyconfig build reads)"
  # Writing out all 1.5 GB (74k files) of the source took longer than compiling a third of the
  # kernel: leave out what this config never builds. Kconfig and Makefiles stay everywhere (the
  # config reads them all and make visits every drivers/ directory); only sources and headers of
  # subsystems it never enters, other architectures and the documentation are skipped.
  local skip=(--exclude='linux-source-6.1/Documentation/*/*' --exclude='linux-source-6.1/tools/perf'
    --exclude='linux-source-6.1/tools/testing' --exclude='linux-source-6.1/samples/*.[ch]')
  for d in alpha arc arm arm64 csky hexagon ia64 loongarch m68k microblaze mips nios2 openrisc parisc \
    powerpc riscv s390 sh sparc um xtensa; do
    skip+=(--exclude="linux-source-6.1/arch/$d/*.[chS]" --exclude="linux-source-6.1/arch/$d/*.dts*")
  done
  for d in drivers/gpu drivers/media drivers/net/wireless drivers/staging drivers/infiniband \
    drivers/usb drivers/iio drivers/pinctrl drivers/clk drivers/crypto sound; do
    skip+=(--exclude="linux-source-6.1/$d/*.[ch]")
  done
  # xz in threads: Debian's tarball is 55 blocks, and one thread took 7.9 s to unpack it here, two 4.2 s
  run_long tar --use-compress-program='xz -T0' -xf "$KSRC_TAR" -C "$tmp" "${skip[@]}"
  src=$tmp/linux-source-6.1
  mkdir "$tmp/out"
  log "kernel $KKEY: extracted in $((SECONDS - start)) s; tinyconfig + guest/kernel.config"
  compact_image "$src"
  {
    make -C "$src" ARCH=x86_64 tinyconfig
    (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$HERE/kernel.config")
    make -C "$src" ARCH=x86_64 olddefconfig
  } >"$tmp/out/build.log" 2>&1 || { tail -n 40 "$tmp/out/build.log"; die "kernel config failed"; }
  # tinyconfig's dependencies silently drop what they cannot satisfy: check every wanted option
  while read -r want; do
    grep -qx "$want" "$src/.config" || missing+=("$want")
  done < <(grep -E '^CONFIG_[A-Za-z0-9_]+=y$' "$HERE/kernel.config")
  if [ "${#missing[@]}" -gt 0 ]; then
    for want in "${missing[@]}"; do
      log "  wanted $want, got: $(grep -E "^(# )?${want%=y}[= ]" "$src/.config" || echo '(absent)')"
    done
    die "kernel config is missing ${#missing[@]} wanted option(s) (dependencies?): ${missing[*]}"
  fi
  log "kernel $KKEY: configured at $((SECONDS - start)) s; make -j$(nproc) bzImage (log: build.log)"
  ticker "$tmp/out/build.log" "$start" &
  TICKER=$!
  run_long make -C "$src" ARCH=x86_64 -j"$(nproc)" bzImage >>"$tmp/out/build.log" 2>&1 \
    || { tail -n 40 "$tmp/out/build.log"; die "kernel build failed"; }
  kill "$TICKER"; wait "$TICKER" 2>/dev/null || true; TICKER=""
  log "kernel $KKEY: compiled at $((SECONDS - start)) s"
  # the kernel's own initramfs writer: root-owned entries and device nodes without being root
  gcc -O2 -o "$tmp/out/gen_init_cpio" "$src/usr/gen_init_cpio.c"
  cp "$src/arch/x86/boot/bzImage" "$tmp/out/bzImage"
  cp "$src/.config" "$tmp/out/config"
  chmod 644 "$tmp/out/bzImage" "$tmp/out/config" "$tmp/out/build.log"
  rm -rf "$src"
  publish "$tmp/out" "$KDIR"
  log "kernel $KKEY: built in $((SECONDS - start)) s, $(stat -c %s "$KDIR/bzImage") bytes"
}

if [ -f "$KDIR/bzImage" ] && [ -x "$KDIR/gen_init_cpio" ]; then
  log "kernel $KKEY: cached"
else
  rm -rf "$KDIR" # an entry without its files (cannot come from publish; be safe)
  build_kernel
fi

# ---- initramfs --------------------------------------------------------------------------------
start=$SECONDS
tmp=$(mktemp -d "$CACHE/guest/.tmp-$KEY.XXXXXX"); TMPS+=("$tmp")
out=$tmp/out
mkdir "$out"
log "guest $KEY: initramfs from busybox-static $(pkgver busybox-static) + guest/rootfs + guest/udpecho.c"
# no libc (guest/udpecho.c says why): a 5 KB static program
gcc -static -nostdlib -Os -fno-stack-protector -fno-asynchronous-unwind-tables -fno-pie -no-pie -s \
  -o "$tmp/udpecho" "$HERE/udpecho.c" || die "guest/udpecho.c did not compile"
{
  for d in /bin /dev /etc /proc /root /run /sys /tmp /usr /var /var/log /var/run /var/www; do
    echo "dir $d 0755 0 0"
  done
  echo "nod /dev/console 0600 0 0 c 5 1"
  echo "nod /dev/null 0666 0 0 c 1 3"
  echo "nod /dev/ttyS0 0600 0 0 c 4 64"
  echo "slink /sbin bin 0777 0 0"
  echo "slink /usr/bin ../bin 0777 0 0"
  echo "slink /usr/sbin ../bin 0777 0 0"
  echo "file /bin/busybox $BUSYBOX 0755 0 0"
  echo "file /bin/udpecho $tmp/udpecho 0755 0 0"
  "$BUSYBOX" --list | LC_ALL=C sort | while read -r applet; do
    [ "$applet" = busybox ] || echo "slink /bin/$applet busybox 0777 0 0"
  done
  (cd "$HERE/rootfs" && find . -mindepth 1 | LC_ALL=C sort) | while read -r f; do
    p=${f#.}
    case "$p" in /bin | /dev | /etc | /proc | /root | /run | /sys | /tmp | /usr | /var | /var/log | /var/run | /var/www) continue ;; esac
    if [ -L "$HERE/rootfs/$f" ]; then echo "slink $p $(readlink "$HERE/rootfs/$f") 0777 0 0"
    elif [ -d "$HERE/rootfs/$f" ]; then echo "dir $p 0755 0 0"
    elif [ -x "$HERE/rootfs/$f" ]; then echo "file $p $HERE/rootfs/$f 0755 0 0"
    else echo "file $p $HERE/rootfs/$f 0644 0 0"; fi
  done
} >"$tmp/initramfs.list"
[ -x "$HERE/rootfs/init" ] || die "guest/rootfs/init missing or not executable"
# Not compressed: under TCG the kernel took 0.2 s to unpack the gzip one, 0.07 s this one; a boot
# from the disk, with its loader reading the extra MiB, still reached the marker sooner.
"$KDIR/gen_init_cpio" -t 0 "$tmp/initramfs.list" >"$out/initrd.cpio"
cp "$KDIR/bzImage" "$out/bzImage"

# ---- disk: whole-disk FAT + syslinux (mtools; no loop devices, no mounts) -----------------------
cat >"$out/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /bzImage
  INITRD /initrd.cpio
  APPEND $KCMDLINE
EOF
payload=$(($(stat -c %s "$out/bzImage") + $(stat -c %s "$out/initrd.cpio")))
size_mib=$(((payload + 1048575) / 1048576 + 1)) # + room for ldlinux.* and FAT overhead
[ "$size_mib" -ge 4 ] || size_mib=4
log "guest $KEY: ${size_mib} MiB FAT disk image with syslinux"
img=$out/disk.img
mkfs.vfat -C -n VIRTBUS -i 7b7b0001 "$img" $((size_mib * 1024)) >/dev/null
syslinux --install "$img"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$img" "$out/bzImage" ::/bzImage
mcopy -i "$img" "$out/initrd.cpio" ::/initrd.cpio
mcopy -i "$img" "$out/syslinux.cfg" ::/syslinux.cfg
files=$(mdir -i "$img" -a -b ::)
grep -qi 'ldlinux\.sys' <<<"$files" || die "syslinux did not install ldlinux.sys"
cat >"$out/build-info" <<EOF
key=$KEY
kernel_key=$KKEY
kernel_source=$KSRC_PKG $(pkgver "$KSRC_PKG")
busybox=$(pkgver busybox-static)
syslinux=$(pkgver syslinux)
cmdline=$KCMDLINE
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
chmod 644 "$out"/*
publish "$out" "$GDIR"
log "guest $KEY: built in $((SECONDS - start)) s: $GDIR/disk.img ($(stat -c %s "$GDIR/disk.img") bytes)"
echo "$GDIR/disk.img" >&3
