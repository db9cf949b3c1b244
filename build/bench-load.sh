#!/usr/bin/env bash
# Load benchmark: Postfix's smtp-source sends the same load (5 KB messages, 20 sessions)
# straight to smtp-sink and through portcullis to smtp-sink, interleaved in one run, and
# prints messages/s of each and the ratio. Loopback only; everything stops at the end.
# Usage: build/bench-load.sh path/to/portcullis [messages-per-round] [rounds]
set -euo pipefail
bin="$(realpath "$1")"; count="${2:-4000}"; rounds="${3:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
sink_port=$(free_port); gw_port=$(free_port); gw2_port=$(free_port)
chmod 755 "$work"

smtp-sink -u nobody -c 127.0.0.1:$sink_port 256 >/dev/null 2>&1 &
mkdir -p "$work/tmp" "$work/tmp2"
scratch=/dev/shm/portcullis-bench-$$; mkdir -p "$scratch"
# Two gateways: libclamav's per-message scratch on the disk (temp_folder), and on tmpfs.
for g in 1 2; do
  port=$gw_port; extra=""; tmp="$work/tmp"
  if [ $g = 2 ]; then port=$gw2_port; extra="scratch_folder = $scratch"; tmp="$work/tmp2"; fi
  cat > "$work/gw$g.ini" <<INI
[general]
interfaces = 127.0.0.1:$port
hostname = bench.local
smtp_server_address = 127.0.0.1
smtp_server_port = $sink_port
temp_folder = $tmp
queue_folder = $work
[scan]
database_folder = $root/build/test-signatures
$extra
INI
  "$bin" run --config "$work/gw$g.ini" >"$work/gw$g.log" 2>"$work/gw$g.err" &
  eval "gw${g}_pid=\$!"
done
for _ in $(seq 100); do
  (echo > /dev/tcp/127.0.0.1/$gw_port) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$gw2_port) 2>/dev/null \
    && (echo > /dev/tcp/127.0.0.1/$sink_port) 2>/dev/null && break
  sleep 0.1   # readiness poll of processes we just started, not synchronisation of a test
done
for g in 1 2; do
  pid_var="gw${g}_pid"
  if ! kill -0 "${!pid_var}" 2>/dev/null; then echo "gateway $g did not start:" >&2; cat "$work/gw$g.err" >&2; exit 1; fi
done

send() { # port -> seconds
  local start end
  start=$(date +%s.%N)
  smtp-source -s 20 -l 5120 -m "$count" -f bench@example.org -t sink@example.net 127.0.0.1:$1
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

rate() { echo "$count * $rounds / $1" | bc -l; }
direct_total=0; disk_total=0; shm_total=0
for r in $(seq "$rounds"); do
  d=$(send $sink_port); g=$(send $gw_port); h=$(send $gw2_port)
  printf 'round %d: direct %.0f msg/s, portcullis %.0f msg/s (scratch on disk), %.0f msg/s (scratch on tmpfs)\n' "$r" \
    "$(echo "$count / $d" | bc -l)" "$(echo "$count / $g" | bc -l)" "$(echo "$count / $h" | bc -l)"
  direct_total=$(echo "$direct_total + $d" | bc -l); disk_total=$(echo "$disk_total + $g" | bc -l); shm_total=$(echo "$shm_total + $h" | bc -l)
done
printf 'direct to smtp-sink:                %6.0f msg/s\n' "$(rate $direct_total)"
printf 'through portcullis, scratch on disk: %6.0f msg/s  ratio %.2f\n' "$(rate $disk_total)" "$(echo "$direct_total / $disk_total" | bc -l)"
printf 'through portcullis, scratch on tmpfs:%6.0f msg/s  ratio %.2f\n' "$(rate $shm_total)" "$(echo "$direct_total / $shm_total" | bc -l)"
for g in 1 2; do
  pid_var="gw${g}_pid"; pid=${!pid_var}
  echo "gateway $g: $(grep -c 'action=delivered' "$work/gw$g.log" || true) delivered, $(grep -c 'action=' "$work/gw$g.log" || true) logged, peak RSS $(grep VmHWM /proc/$pid/status | awk '{print $2, $3}')"
  kill -TERM "$pid"; wait "$pid" || true
done
rm -rf "$scratch"
