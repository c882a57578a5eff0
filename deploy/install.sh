#!/usr/bin/env bash
# Installs virtbus on this host (root, Debian 12) as systemd services: the packages and a venv
# (scripts/setup.sh), the units (deploy/systemd), /etc/virtbus/virtbus.env (kept if present).
# Which services run here is up to you:
#   bash deploy/install.sh all            # NATS, control plane and a node on this one host
#   bash deploy/install.sh node           # a node only (NATS and the control plane elsewhere)
#   bash deploy/install.sh control        # NATS and the control plane only
# The checkout stays where it is (the venv installs it in place): keep it, or clone to /opt/virtbus first.
set -euo pipefail
cd "$(dirname "$0")/.."
role=${1:-all}
case "$role" in all|node|control) ;; *) echo "usage: $0 all|node|control" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

bash scripts/setup.sh
.venv/bin/python -m ctl.hostinstall units --out /etc/systemd/system --python "$PWD/.venv/bin/python"
install -d -m 0700 /etc/virtbus
[ -f /etc/virtbus/virtbus.env ] || install -m 0600 deploy/virtbus.env.example /etc/virtbus/virtbus.env
systemctl daemon-reload

units=()
case "$role" in
  all) units=(virtbus-nats virtbus-scheduler virtbus-handler) ;;
  control) units=(virtbus-nats virtbus-scheduler) ;;
  node) units=(virtbus-handler) ;;
esac
systemctl enable --now "${units[@]}"
systemctl --no-pager --lines=0 status "${units[@]}" || true
