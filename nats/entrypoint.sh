#!/bin/sh
# nats-fly entrypoint: derive this Machine's identity from Fly's runtime, guard
# against islands, then run nats-server as its child and turn Fly's kill_signal into lame duck.
#
# Why a bounded wait for a peer, and not re-resolve-and-reload: Fly DNS lists only
# started Machines and its catalogue is eventually consistent, and nats-server gives
# up for good on a route whose name resolves only to itself. Machines that cold-start
# together would each see only themselves and stay islands. Waiting (NATS_PEER_WAIT
# seconds by the clock, plus at most one round of lookups, longer only when DNS does not
# answer) until the route name resolves to someone else makes the first dial find a peer;
# once any route is up, gossip completes the mesh. A watcher that reloads routes would have
# to keep asking DNS beside nats-server, rewrite its routes and reload it: more moving parts
# for the same result (this script stays beside the server only to pass Fly's signals on). The only Machine the route name can reach waits just long
# enough to be sure of it (ALONE_SETTLE); later Machines find it at once.
# POSIX sh with busybox tools only, as in the nats:alpine image.
set -eu

# Fly's Machines API has been reported refusing kill_signal SIGUSR2 (flyctl#4721), the signal of
# nats-server's lame duck mode. So fly.toml keeps Fly's default, SIGINT, and this script stays
# nats-server's parent: SIGINT becomes SIGUSR2 for the server, and the script exits only when the
# server has, with its status (Fly stops the VM when its main process exits; leaving early would
# cut lame duck short). Every other signal is passed on as it is. The traps are set before
# anything starts; a signal that arrives before the server runs ends the script at once.
server=""
on_signal() {
  if [ -z "$server" ]; then exit 0; fi
  kill -s "$1" "$server" 2>/dev/null || true
}
trap 'on_signal USR2' INT
for forwarded in TERM HUP USR1 USR2 QUIT; do
  trap "on_signal $forwarded" "$forwarded"
done

: "${FLY_APP_NAME:?not running on Fly: FLY_APP_NAME is unset}"
: "${FLY_REGION:?FLY_REGION is unset}"
: "${FLY_MACHINE_ID:?FLY_MACHINE_ID is unset}"

# Secrets arrive base64-encoded, as NAME_B64: flyctl's `secrets import` parser cuts a value at '#'
# (after an even number of '"'), and a value opening with '""' swallows the lines after it, while
# base64 holds none of those characters. Each is decoded here, byte for byte, into NAME.
for name in $(env | sed -n 's/^\(NATS_[A-Z0-9_]*\)_B64=.*/\1/p'); do
  eval "encoded=\${${name}_B64}"
  if ! decoded=$(printf '%s' "$encoded" | base64 -d 2>/dev/null); then
    echo "nats-fly: the ${name}_B64 secret is not base64" >&2
    exit 1
  fi
  export "$name=$decoded"
  unset "${name}_B64"
done
unset encoded decoded
: "${NATS_ROUTE_PASSWORD:?the NATS_ROUTE_PASSWORD secret is unset}"
cluster_port="${NATS_CLUSTER_PORT:-4248}"
gateway_port="${NATS_GATEWAY_PORT:-7222}"
peer_wait="${NATS_PEER_WAIT:-20}"
ALONE_SETTLE=5  # seconds: Fly DNS propagation, a few seconds

internal="${FLY_APP_NAME}.internal"
# Stable across restarts and host moves, unlike the 6PN address.
stable="${FLY_MACHINE_ID}.vm.${internal}"
case "${NATS_TOPOLOGY:-mesh}" in
  supercluster) peers="${FLY_REGION}.${internal}" ;;
  *) peers="${internal}" ;;
esac

# nats-server parses a $VARIABLE's value as a conf value, so a Machine id such as 4e4a...
# would read as a number. Every value nats.conf refers to is exported as a quoted string.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

NATS_SERVER_NAME=$(quote "${FLY_REGION}-${FLY_MACHINE_ID}")
NATS_REGION_TAG=$(quote "region:${FLY_REGION}")
NATS_CLUSTER_ADVERTISE=$(quote "${stable}:${cluster_port}")
NATS_GATEWAY_ADVERTISE=$(quote "${stable}:${gateway_port}")
export NATS_SERVER_NAME NATS_REGION_TAG NATS_CLUSTER_ADVERTISE NATS_GATEWAY_ADVERTISE
route_password=$NATS_ROUTE_PASSWORD
for secret in NATS_SYS_PASSWORD NATS_ROUTE_PASSWORD $(env | sed -n 's/^\(NATS_\(LEAF_\)\{0,1\}PASSWORD_[A-Z0-9_]*\)=.*/\1/p'); do
  eval "value=\${$secret:-}"
  if [ -n "$value" ]; then export "$secret=$(quote "$value")"; fi
done
unset value

# The tls block only makes INFO say TLS is available, for TLS-first clients that
# reach us through Fly's tls handler; the key arrives as a secret, never in the image.
tls_dir=${NATS_FLY_TLS_DIR:-/tmp/nats-fly-tls}
mkdir -p "$tls_dir"
(
  umask 077
  printf '%s\n' "${NATS_TLS_CERT:?the NATS_TLS_CERT secret is unset}" >"$tls_dir/cert.pem"
  printf '%s\n' "${NATS_TLS_KEY:?the NATS_TLS_KEY secret is unset}" >"$tls_dir/key.pem"
)
NATS_TLS_CERT_FILE=$(quote "$tls_dir/cert.pem")
NATS_TLS_KEY_FILE=$(quote "$tls_dir/key.pem")
export NATS_TLS_CERT_FILE NATS_TLS_KEY_FILE
unset NATS_TLS_KEY NATS_TLS_CERT

# The first string of a name's TXT record (busybox nslookup prints no other), or nothing.
txt_of() {
  nslookup -type=TXT "$1" 2>/dev/null | sed -n 's/.*text = "\(.*\)"$/\1/p'
}

# The addresses a name resolves to right now. When Fly DNS does not answer, busybox nslookup
# gives up after 5 s and this prints nothing.
addresses_of() {
  nslookup -type=AAAA "$1" 2>/dev/null |
    awk '/^Name:/ { answers = 1 } answers && /^Address/ { print $NF }'
}

# Addresses, other than our own, that the route name resolves to right now. One question for the
# whole name: Machines that start together turn visible together, so one answer sees them together.
# But a UDP answer holds at most 512 bytes, 15-17 addresses, and busybox nslookup does not retry
# over TCP: an answer that full may have been cut short, so in a mesh each region is asked too
# (regions from the regions.<app>.internal TXT record), as its answer stays small. Every peer is
# seeded, not a subset: pairs that meet only through gossip have lost pooled route connections.
peer_addresses() {
  everyone=$(addresses_of "$peers")
  if [ "$peers" = "$internal" ] && [ "$(printf '%s\n' "$everyone" | grep -c .)" -ge 15 ]; then
    for region in $(txt_of "regions.${internal}" | tr ',' ' '); do
      everyone="$everyone
$(addresses_of "${region}.${internal}")"
    done
  fi
  printf '%s\n' "$everyone" | grep -v -x -F "${FLY_PRIVATE_IP:-none}" | grep . | sort -u || true
}

# Whether we are the only Machine, in any state, that the route name can ever reach: the app's
# only one (mesh), or our region's (supercluster). Then no island can form and there is nothing
# to wait for: a dev stack's one Machine, a first deploy, a supercluster region of one. From
# all.vms.<app>.internal ("<id> <region>,..."; stopped Machines too). Trusted only when complete:
# we are in it, and it is one TXT string under 255 characters, as busybox nslookup prints only the
# first string. Anything else: not alone. Other Machines' records reach DNS a few seconds late, so
# a Machine made alongside us may be missing yet: the caller asks again for ALONE_SETTLE seconds.
only_machine() {
  vms=$(txt_of "all.vms.${internal}")
  [ -n "$vms" ] && [ "${#vms}" -lt 255 ] || return 1
  scope=$(printf '%s\n' "$vms" | tr ',' '\n' |
    awk -v region="$FLY_REGION" -v mesh="$([ "$peers" = "$internal" ] && echo 1)" \
      'NF == 2 && (mesh || $2 == region) { print $1 }')
  [ "$scope" = "$FLY_MACHINE_ID" ]
}

# The wait is bounded by the clock, not by a count of lookups: a lookup that times out takes
# 5 s, and counting those would stretch the wait to minutes. The addresses that end the wait are
# the ones seeded, so a later lookup that fails cannot turn a found peer into no peer.
started=$(date +%s)
found=$(peer_addresses)
settle=$ALONE_SETTLE
[ "$settle" -le "$peer_wait" ] || settle=$peer_wait
alone=""
if [ "$peer_wait" -gt 0 ] && [ -z "$found" ] && only_machine; then
  alone=yes
  round=0  # rounds, not the clock: whole-second `date` could cut the settle short by up to 1 s
  while [ -z "$found" ] && [ "$round" -lt "$settle" ]; do
    sleep 1
    round=$((round + 1))
    found=$(peer_addresses)
    if [ -z "$found" ] && ! only_machine; then alone=""; fi
    [ -n "$alone" ] || break
  done
fi
if [ -n "$alone" ] && [ -z "$found" ]; then
  echo "nats-fly: the only Machine at ${peers} (all.vms.${internal}, ${settle}s); starting ${FLY_REGION}-${FLY_MACHINE_ID}"
elif [ "$peer_wait" -gt 0 ]; then
  if [ -z "$found" ]; then
    echo "nats-fly: waiting up to ${peer_wait}s for a peer at ${peers}"
    while [ -z "$found" ] && [ $(($(date +%s) - started)) -lt "$peer_wait" ]; do
      sleep 1
      found=$(peer_addresses)
    done
  fi
  waited=$(($(date +%s) - started))
  if [ -n "$found" ]; then
    echo "nats-fly: peers at ${peers} after ${waited}s; starting ${FLY_REGION}-${FLY_MACHINE_ID}"
  else
    echo "nats-fly: no peer at ${peers} after ${waited}s; starting ${FLY_REGION}-${FLY_MACHINE_ID} as the first server"
  fi
fi

# One seed route per peer address, not one to the shared name: nats-server dials a random
# address of a name for each connection of a route's pool, so the connections of one route
# would scatter over several servers. These seeds are only for joining; the mesh itself is
# gossiped under the stable advertise names. With no peer yet, the shared name: it resolves
# to us alone now and is dropped, and every later Machine dials us.
routes=""
for address in $found; do
  routes="${routes:+$routes, }$(quote "nats-route://route:${route_password}@[${address}]:${cluster_port}")"
done
[ -n "$routes" ] || routes=$(quote "nats-route://route:${route_password}@${peers}:${cluster_port}")
export NATS_ROUTES="[${routes}]"
unset route_password

"$@" &
server=$!
# A trapped signal ends `wait` early while the server runs on: wait again until it is gone.
# The shell keeps the exit status of a child it has reaped, so the last `wait` reports it.
while :; do
  wait "$server" || true
  kill -0 "$server" 2>/dev/null || break
done
status=0
wait "$server" || status=$?
exit "$status"
