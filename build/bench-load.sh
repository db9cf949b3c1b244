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
sink_port=$(free_port); gw_port=$(free_port)
chmod 755 "$work"

smtp-sink -u nobody -c 127.0.0.1:$sink_port 256 >/dev/null 2>&1 &
mkdir -p "$work/tmp"
cat > "$work/gw.ini" <<INI
[general]
interfaces = 127.0.0.1:$gw_port
hostname = bench.local
smtp_server_address = 127.0.0.1
smtp_server_port = $sink_port
temp_folder = $work/tmp
[scan]
database_folder = $root/build/test-signatures
INI
"$bin" run --config "$work/gw.ini" >"$work/gw.log" 2>"$work/gw.err" &
gw_pid=$!
for _ in $(seq 100); do
  (echo > /dev/tcp/127.0.0.1/$gw_port) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$sink_port) 2>/dev/null && break
  sleep 0.1   # readiness poll of a process we just started, not synchronisation of a test
done

send() { # port -> seconds
  local start end
  start=$(date +%s.%N)
  smtp-source -s 20 -l 5120 -m "$count" -f bench@example.org -t sink@example.net 127.0.0.1:$1
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

direct_total=0; gw_total=0
for r in $(seq "$rounds"); do
  d=$(send $sink_port); g=$(send $gw_port)
  printf 'round %d: direct %.0f msg/s, through portcullis %.0f msg/s\n' "$r" "$(echo "$count / $d" | bc -l)" "$(echo "$count / $g" | bc -l)"
  direct_total=$(echo "$direct_total + $d" | bc -l); gw_total=$(echo "$gw_total + $g" | bc -l)
done
direct_rate=$(echo "$count * $rounds / $direct_total" | bc -l)
gw_rate=$(echo "$count * $rounds / $gw_total" | bc -l)
printf 'direct to smtp-sink:     %.0f msg/s\n' "$direct_rate"
printf 'through portcullis:      %.0f msg/s\n' "$gw_rate"
printf 'ratio (gateway/direct):  %.2f\n' "$(echo "$gw_rate / $direct_rate" | bc -l)"
delivered=$(grep -c 'action=delivered' "$work/gw.log" || true)
echo "gateway log: $delivered messages delivered, peak RSS $(grep VmHWM /proc/$gw_pid/status | awk '{print $2, $3}')"
kill -TERM $gw_pid; wait $gw_pid || true
