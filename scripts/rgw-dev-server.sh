#!/usr/bin/env bash
# A real S3 server on loopback for tests, benchmarks and trying Dolly's snapshot repository: Ceph's radosgw on a
# single-node Ceph cluster (one monitor, one OSD, no manager), everything under one state directory.
#
#   rgw-dev-server.sh start DIR      create the cluster on first use, start what is not running, print the endpoint
#   rgw-dev-server.sh stop DIR       stop radosgw, the OSD and the monitor (the data stays in DIR)
#   rgw-dev-server.sh status DIR     say what runs; exit 0 when radosgw answers, 3 otherwise
#   rgw-dev-server.sh env DIR        print the endpoint and keys (shell syntax) of a created cluster
#   rgw-dev-server.sh stop-rgw DIR   stop radosgw alone (fault tests: the S3 endpoint goes away, the data stays)
#   rgw-dev-server.sh start-rgw DIR  start radosgw alone again, on the same port
#   rgw-dev-server.sh destroy DIR    stop everything and delete DIR
#
# Every start is idempotent. Nothing outside DIR is written: the config, sockets, pid files and logs live in DIR,
# the ports are chosen free once and kept (so a restart answers on the same endpoint), and two directories are
# two independent clusters. The OSD keeps its objects with BlueStore in a sparse file (DOLLY_RGW_OSD_SIZE at
# creation, default 64G logical), so they survive a stop and start.
# Needs ceph-mon, ceph-osd, radosgw and ceph-common (scripts/install-test-deps.sh installs them). The daemons run
# as the invoking user and touch only DIR and loopback ports (tested as root).
set -euo pipefail

readonly USER_ID=dolly
readonly ENV_FILE=env
readonly WAIT_SECONDS=${DOLLY_RGW_WAIT_SECONDS:-90}

die() { echo "rgw-dev-server: $*" >&2; exit 1; }

usage() {
  echo "usage: rgw-dev-server.sh start|stop|status|env|stop-rgw|start-rgw|destroy DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2
[ -n "$dir" ] || usage
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
conf="$dir/ceph.conf"

for p in /usr/sbin /sbin; do case ":$PATH:" in *":$p:"*) ;; *) PATH="$PATH:$p" ;; esac; done

require() {
  local missing=()
  for b in "$@"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] || die "missing $(IFS=,; echo "${missing[*]}"); run scripts/install-test-deps.sh (Debian packages ceph-mon, ceph-osd, radosgw, ceph-common)"
}

# A port nothing listens on now (bash's /dev/tcp connects; a refused connection means free).
free_port() {
  local p tries=0
  while [ $tries -lt 200 ]; do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    tries=$((tries + 1))
  done
  die "no free TCP port found on 127.0.0.1"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pidfile() { echo "$dir/run/$1.pid"; }

running() {
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # A stale pid file whose number was reused by another program does not count.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$conf"
}

ceph_cli() { ceph --conf "$conf" --connect-timeout 20 "$@"; }

wait_for() {
  local what=$1 name=$2 deadline=$((SECONDS + WAIT_SECONDS))
  shift 2
  until "$@" >/dev/null 2>&1; do
    running "$name" || die "$what exited while starting; see $dir/log/$name.log and $name.stdout"
    if [ $SECONDS -ge $deadline ]; then
      stop_daemon "$name"
      die "$what did not come up within ${WAIT_SECONDS}s (stopped it again); see $dir/log/$name.log"
    fi
    sleep 0.2
  done
}

load_env() {
  [ -f "$dir/$ENV_FILE" ] || die "$dir holds no dev server; start one with 'start $dir' first"
  # shellcheck disable=SC1090
  . "$dir/$ENV_FILE"
}

write_conf() {
  local fsid=$1 mon_port=$2 rgw_port=$3 store=$4 osd_size=$5
  cat >"$conf" <<EOF
# Written by rgw-dev-server.sh: a single-node Ceph cluster on loopback for development and tests.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
# Loopback only and throwaway data: no cephx, so no keyrings to create or find.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
run dir = $dir/run
# Command-line clients (ceph, radosgw-admin) get no admin socket, so they never collide with a daemon's.
admin socket =
log file = $dir/log/\$name.log
crash dir = $dir/crash
keyring = $dir/keyring
# One OSD: one copy, no failure domain, few placement groups, no warnings about it.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail crit = 1
mon data avail warn = 2
# The dev cluster shares a small machine: modest memory and threads.
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 268435456
osd op num shards = 2
osd op num threads per shard = 1

[mon.a]
admin socket = $dir/run/mon.a.asok
mon data = $dir/mon

[osd.0]
admin socket = $dir/run/osd.0.asok
osd data = $dir/osd
osd objectstore = $store
bluestore block create = true
bluestore block size = $osd_size
bluestore block db create = false
bluestore block wal create = false
osd crush update on start = true

[client.rgw.dev]
admin socket = $dir/run/client.rgw.dev.asok
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 64
rgw enable usage log = false
rgw zone = default
EOF
}

create() {
  local fsid mon_port rgw_port store osd_size access secret osd_uuid
  store=bluestore
  osd_size=${DOLLY_RGW_OSD_SIZE:-64G}
  osd_size=$(numfmt --from=iec "$osd_size") || die "DOLLY_RGW_OSD_SIZE '$DOLLY_RGW_OSD_SIZE' is not a size such as 64G"
  [ -z "$(ls -A "$dir" 2>/dev/null)" ] || die "$dir is not empty and holds no dev server (no $ENV_FILE); choose an empty or new directory"
  mkdir -p "$dir"/{run,log,crash,mon,osd,rgw}
  fsid=$(uuidgen)
  mon_port=$(free_port)
  rgw_port=$(free_port)
  while [ "$rgw_port" = "$mon_port" ]; do rgw_port=$(free_port); done
  write_conf "$fsid" "$mon_port" "$rgw_port" "$store" "$osd_size"

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon --conf "$conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mkfs.log" 2>&1 || die "ceph-mon --mkfs failed: $(tail -5 "$dir/log/mkfs.log")"
  start_mon
  osd_uuid=$(uuidgen)
  ceph_cli osd new "$osd_uuid" 0 >/dev/null
  ceph-osd --conf "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.log" 2>&1 || die "ceph-osd --mkfs failed: $(tail -5 "$dir/log/mkfs.log")"
  start_osd
  start_rgw

  access=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
  radosgw-admin --conf "$conf" user create --uid "$USER_ID" --display-name "Dolly dev server" \
    --access-key "$access" --secret-key "$secret" >/dev/null
  cat >"$dir/$ENV_FILE.tmp" <<EOF
DOLLY_S3_ENDPOINT=http://127.0.0.1:$rgw_port
DOLLY_S3_REGION=default
DOLLY_S3_ACCESS_KEY=$access
DOLLY_S3_SECRET_KEY=$secret
DOLLY_RGW_USER=$USER_ID
EOF
  mv "$dir/$ENV_FILE.tmp" "$dir/$ENV_FILE"
}

# Daemons run in the foreground of their own session (not Ceph's own daemonizing, whose parent blocks until the
# daemon has reached the monitor), so a daemon that cannot come up is found by wait_for and stopped.
launch() {
  local name=$1
  shift
  setsid "$@" --conf "$conf" -f </dev/null >>"$dir/log/$name.stdout" 2>&1 &
  echo $! >"$(pidfile "$name")"
}

start_mon() {
  running mon.a || launch mon.a ceph-mon -i a
  wait_for "the Ceph monitor" mon.a ceph_cli mon stat
}

start_osd() {
  running osd.0 || launch osd.0 ceph-osd -i 0
  wait_for "the Ceph OSD" osd.0 osd_up
}

osd_up() { ceph_cli osd dump --format json | grep -q '"up":1'; }

rgw_port() { sed -n 's/^rgw frontends = beast endpoint=127.0.0.1:\([0-9]*\)$/\1/p' "$conf"; }

start_rgw() {
  local port
  port=$(rgw_port)
  if ! running client.rgw.dev; then
    port_open "$port" && die "port $port (this dev server's S3 endpoint) is taken by another program"
    launch client.rgw.dev radosgw -n client.rgw.dev
  fi
  wait_for "radosgw" client.rgw.dev rgw_answers "$port"
}

# The first start creates RGW's pools and zone; it listens only when done, so an HTTP answer means ready.
rgw_answers() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; }

stop_daemon() {
  local name=$1 f pid deadline
  f=$(pidfile "$name")
  running "$name" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
  rm -f "$f"
}

stop_all() {
  stop_daemon client.rgw.dev
  stop_daemon osd.0
  stop_daemon mon.a
}

print_env() {
  load_env
  cat "$dir/$ENV_FILE"
}

case "$cmd" in
  start)
    require ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl numfmt
    if [ -f "$dir/$ENV_FILE" ]; then
      start_mon
      start_osd
      start_rgw
    else
      create
    fi
    print_env
    ;;
  stop)
    [ -f "$conf" ] || exit 0
    stop_all
    ;;
  stop-rgw)
    load_env
    stop_daemon client.rgw.dev
    ;;
  start-rgw)
    load_env
    running mon.a && running osd.0 || die "the monitor or the OSD of $dir is not running; use 'start $dir'"
    start_rgw
    ;;
  status)
    [ -f "$conf" ] || { echo "no dev server in $dir"; exit 3; }
    for d in mon.a osd.0 client.rgw.dev; do
      if running "$d"; then echo "$d: running (pid $(cat "$(pidfile "$d")"))"; else echo "$d: stopped"; fi
    done
    port=$(rgw_port)
    if rgw_answers "$port"; then echo "S3 endpoint: http://127.0.0.1:$port"; else echo "S3 endpoint http://127.0.0.1:$port: not answering"; exit 3; fi
    ;;
  env)
    print_env
    ;;
  destroy)
    if [ -f "$conf" ]; then
      stop_all
    elif [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
      die "$dir holds no dev server (no ceph.conf); not deleting it"
    fi
    rm -rf "$dir"
    ;;
  *)
    usage
    ;;
esac
