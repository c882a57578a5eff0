#!/bin/sh
# (Re)writes the httpd page; it names the current hostname (sourced by /init at boot, run by the
# udhcpc script when a lease names the host). Builtins only but mv: see /init.
HOSTNAME_FILE=${HOSTNAME_FILE:-/proc/sys/kernel/hostname} # (overridable, for tests/unit/test_guest_files.py)
WWW=${WWW:-/var/www}
read -r h <"$HOSTNAME_FILE"
printf '<!DOCTYPE html>\n<html><head><title>%s</title></head>\n<body><h1>%s</h1><p>virtbus test guest, hostname: %s</p></body></html>\n' \
  "$h" "$h" "$h" >"$WWW/index.html.new"
mv "$WWW/index.html.new" "$WWW/index.html"
