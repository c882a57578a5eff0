#!/usr/bin/env bash
# The compose lab (compose/compose.yml) with podman and podman-compose, on this machine:
#   bash compose/lab.sh up       # image built or reused, services started, waits for 2 Ready nodes
#   bash compose/lab.sh status   # its containers, and where NATS and Prometheus answer
#   bash compose/lab.sh down     # removes its containers, networks and state
# Then: NATS_CREDS=<state>/creds/admin.nk NATS_CA=<state>/tls/ca.pem \
#         .venv/bin/virtbus --server tls://127.0.0.1:4222 get nodes     (lab.sh status prints both paths)
# Env: VIRTBUS_COMPOSE_PROJECT (virtbus), VIRTBUS_NATS_PORT (4222), VIRTBUS_PROMETHEUS_PORT (9090),
#      VIRTBUS_COMPOSE_STATE (/var/lib/virtbus/compose/<project>).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
cd "$REPO"
export CONTAINERS_CONF="$HERE/containers.conf"
project=${VIRTBUS_COMPOSE_PROJECT:-virtbus}
state=${VIRTBUS_COMPOSE_STATE:-/var/lib/virtbus/compose/$project}
export VIRTBUS_NATS_PORT=${VIRTBUS_NATS_PORT:-4222} VIRTBUS_PROMETHEUS_PORT=${VIRTBUS_PROMETHEUS_PORT:-9090}
# compose.yml refuses to run without these; `down` and `status` do not use them
export VIRTBUS_IMAGE=${VIRTBUS_IMAGE:-unset} VIRTBUS_GUEST_DIR=${VIRTBUS_GUEST_DIR:-unset}
export VIRTBUS_NODE_CACHE=${VIRTBUS_NODE_CACHE:-unset}
export VIRTBUS_PROMETHEUS_CONFIG="$state/prometheus.yml" VIRTBUS_COMPOSE_STATE="$state"
# the CLI on this machine: admin's nkey, and the lab's CA to check the servers' certificates
export NATS_CREDS="$state/creds/admin.nk" NATS_CA="$state/tls/ca.pem"
say() { echo "compose: $*"; }
compose() { "$REPO/.venv/bin/podman-compose" --no-ansi -p "$project" -f "$HERE/compose.yml" "$@"; }

up() {
  bash scripts/setup.sh --compose >&2
  VIRTBUS_IMAGE=$(bash compose/image.sh | tail -n 1)
  VIRTBUS_GUEST_DIR=$(dirname "$(bash guest/build.sh | tail -n 1)")
  # what the nodes keep across labs (compose.yml), one directory per image: QEMU's capabilities are
  # valid for the QEMU they were read from
  VIRTBUS_NODE_CACHE="${VIRTBUS_CACHE:-$HOME/.cache/virtbus}/compose/nodes-${VIRTBUS_IMAGE##*:}"
  mkdir -p "$VIRTBUS_NODE_CACHE"
  mkdir -p "$state"
  .venv/bin/python -m ctl lab prometheus-config --compose "$HERE/compose.yml" >"$VIRTBUS_PROMETHEUS_CONFIG"
  .venv/bin/python -m ctl.clusterauth --dir "$state" --nodes node1,node2 --also-ip 127.0.0.1 \
    --server nats1=10.98.0.2 --server nats2=10.98.0.3 --server nats3=10.98.0.4
  say "starting project $project from $VIRTBUS_IMAGE (log: $state/up.log)"
  compose up -d >"$state/up.log" 2>&1 || { tail -n 30 "$state/up.log"; exit 1; }
  say "waiting for 2 nodes to be Ready (NATS at 127.0.0.1:$VIRTBUS_NATS_PORT)"
  local start=$SECONDS last=""
  while true; do
    ready=$(.venv/bin/virtbus --server "tls://127.0.0.1:$VIRTBUS_NATS_PORT" get nodes 2>/dev/null |
            awk 'NR > 1 && $2 == "Ready"' | wc -l) || ready=0
    [ "$ready" != "$last" ] && say "  $ready/2 nodes Ready ($((SECONDS - start)) s)" && last=$ready
    [ "$ready" -ge 2 ] && break
    if [ $((SECONDS - start)) -gt 180 ]; then
      say "nodes not Ready after 180 s; the services said:"
      for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
        echo "--- $c"; podman logs --tail 15 "$c" 2>&1
      done
      exit 1
    fi
    sleep 1
  done
  status
}

status() {
  podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}\t{{.Status}}'
  say "NATS: tls://127.0.0.1:$VIRTBUS_NATS_PORT (a 3-server cluster, state with 3 replicas, TLS)"
  say "credentials: NATS_CREDS=$state/creds/admin.nk (viewer.nk: read only) NATS_CA=$state/tls/ca.pem"
  say "Prometheus: http://127.0.0.1:$VIRTBUS_PROMETHEUS_PORT (scrapes $(grep -o "targets: .*" \
    "$VIRTBUS_PROMETHEUS_CONFIG" 2>/dev/null | cut -d' ' -f2-))"
}

down() {
  compose down -v -t 20 >/dev/null 2>&1 || true
  left=$(podman ps -aq --filter "label=io.podman.compose.project=$project")
  # shellcheck disable=SC2086
  [ -z "$left" ] || podman rm -f -t 10 --depend $left >/dev/null
  # podman-compose 1.0 leaves the project's networks behind
  for net in $(podman network ls --format '{{.Name}}' | grep -x "${project}_lab\|${project}_published" || true); do
    podman network rm -f "$net" >/dev/null
  done
  rm -rf "$state"
  say "down; removed project $project"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: compose/lab.sh up|down|status" >&2; exit 2 ;;
esac
