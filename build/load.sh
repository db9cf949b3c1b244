#!/usr/bin/env bash
# Load runs for docs/RELIABILITY.md (not part of `make test`). Loopback only, bounded in count
# and time; everything started here is stopped at the end.
#
#   build/load.sh BIN connections [ACTIVE IDLE TRICKLE MESSAGES]
#       ACTIVE clients (default 500) send MESSAGES (20) each while IDLE (250) connections say
#       nothing and TRICKLE (250) send a byte a second; command/data timeouts 10 s. Reports what
#       every group got and the gateway's peak RSS; fails if an active client missed a 250.
#   build/load.sh BIN soak [MESSAGES]
#       MESSAGES (100000) 2 KB messages with smtp-source (20 sessions) through the gateway to
#       smtp-sink; VmRSS sampled against messages delivered, managed bytes allocated per message
#       (PORTCULLIS_GC_REPORT=1 makes the daemon print GC.GetTotalAllocatedBytes at exit, minus an
#       idle start/stop of the same build).
set -euo pipefail
bin="$(realpath "$1")"; mode="$2"; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# 1,000 client sockets plus as many downstream sockets, for the gateway and the clients: raise
# the soft limit as far as the hard one allows (at most 65536), and say so if that is too low.
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=65536
ulimit -n "$(( hard < 65536 ? hard : 65536 ))"
[ "$(ulimit -n)" -ge 4096 ] || echo "warning: open files limited to $(ulimit -n)" >&2

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
sink_port=$(free_port); gw_port=$(free_port)

wait_port() {
  for _ in $(seq 200); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05   # readiness poll of a process we just started, bounded
  done
  echo "port $1 never opened" >&2; return 1
}

smtp-sink -u nobody -c "127.0.0.1:$sink_port" 1024 >"$work/sink.out" 2>&1 &
pids+=($!)

write_config() {
  mkdir -p "$work/tmp"
  cat > "$work/gw.ini" <<INI
[general]
interfaces = 127.0.0.1:$gw_port
hostname = load.local
smtp_server_address = 127.0.0.1
smtp_server_port = $sink_port
smtp_server_timeout = 30s
temp_folder = $work/tmp
queue_folder = $work/queue
[quarantine]
folder = $work/quarantine
[scan]
database_folder = $root/build/test-signatures
queue_length = 1024
[limits]
command_timeout = ${1:-5m}
data_timeout = ${2:-3m}
max_connections = 0
INI
}

start_gateway() {
  PORTCULLIS_GC_REPORT=1 "$bin" run --config "$work/gw.ini" >"$work/gw.log" 2>"$work/gw.err" &
  gw_pid=$!
  pids+=("$gw_pid")
  wait_port "$gw_port"; wait_port "$sink_port"
}

stop_gateway() {
  kill -TERM "$gw_pid"; wait "$gw_pid" || true
}

rss() { awk -v f="$2" '$1==f":" {print $2}' "/proc/$1/status"; }
allocated() { cat "$work/gw.log" "$work/gw.err" | sed -nE "s/.*gc allocated_bytes=([0-9]+).*/\\1/p" | tail -1; }

case "$mode" in
connections)
  active="${1:-500}"; idle="${2:-250}"; trickle="${3:-250}"; messages="${4:-20}"
  write_config 10s 10s
  start_gateway
  echo "gateway: rss at start $(rss "$gw_pid" VmRSS) kB; $((active + idle + trickle)) connections: $active active x $messages messages, $idle idle, $trickle trickling (command_timeout = data_timeout = 10s)"
  status=0
  python3 "$root/build/load-clients.py" --port "$gw_port" --active "$active" --messages "$messages" \
    --idle "$idle" --trickle "$trickle" --trickle-seconds 30 || status=$?
  echo "gateway: peak RSS $(rss "$gw_pid" VmHWM) kB, threads $(rss "$gw_pid" Threads)"
  stop_gateway
  echo "gateway log: delivered $(grep -c 'action=delivered' "$work/gw.log" || true), other verdict lines $(grep 'verdict=' "$work/gw.log" | grep -vc 'action=delivered' || true)"
  grep -E 'warn|error' "$work/gw.err" | sort | uniq -c | sort -rn | head -5 || true
  exit "$status"
  ;;
soak)
  messages="${1:-100000}"
  write_config
  # Baseline: start and stop with no mail, for what start-up itself allocates.
  start_gateway; stop_gateway
  base=$(allocated)
  start_gateway
  echo "messages_delivered rss_kB"
  (
    next=0
    while kill -0 "$gw_pid" 2>/dev/null; do
      n=$(grep -c 'action=delivered' "$work/gw.log" || true)
      if [ "$n" -ge "$next" ]; then echo "$n $(rss "$gw_pid" VmRSS)"; next=$((next + messages / 20)); fi
      sleep 0.5   # sampling interval of a monitor, not synchronisation
    done
  ) > "$work/samples" &
  sampler=$!
  start=$(date +%s.%N)
  smtp-source -s 20 -l 2048 -m "$messages" -f load@client.test -t sink@dest.test "127.0.0.1:$gw_port"
  end=$(date +%s.%N)
  delivered=$(grep -c 'action=delivered' "$work/gw.log" || true)
  final_rss=$(rss "$gw_pid" VmRSS); peak=$(rss "$gw_pid" VmHWM)
  stop_gateway
  wait "$sampler" 2>/dev/null || true
  cat "$work/samples"
  echo "$delivered $final_rss (end)"
  total=$(allocated)
  printf 'messages sent %d, delivered %d, refused %d, in %.1f s (%.0f msg/s)\n' "$messages" "$delivered" \
    "$(grep 'verdict=' "$work/gw.log" | grep -vc 'action=delivered' || true)" "$(echo "$end - $start" | bc -l)" "$(echo "$messages / ($end - $start)" | bc -l)"
  echo "peak RSS $peak kB; managed bytes allocated: $total total, $base at an idle start/stop, $(( (total - base) / messages )) per message"
  grep -h "gc allocated" "$work/gw.log" "$work/gw.err" | tail -1
  [ "$delivered" -eq "$messages" ]
  ;;
*)
  echo "usage: $0 BIN connections|soak [...]" >&2; exit 64 ;;
esac
