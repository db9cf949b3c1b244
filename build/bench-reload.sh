#!/usr/bin/env bash
# Reload bench: mail keeps flowing while the signatures are reloaded. For reload_memory =
# concurrent and = low, one gateway on a folder of about a million signatures (random .hdb
# lines, build/gen-signatures.py, plus the EICAR test signature) takes a steady load from
# build/bench_reload.py (WORKERS sessions of ~5 KB messages) into a counting sink, while
# `portcullis reload` runs RELOADS times. Reported per mode: 4xx/5xx and errors, messages the
# client saw accepted vs. messages the sink received (lost), p50/p99 latency of messages sent
# during a reload vs. outside, reload duration, and peak RSS during the reloads (VmHWM reset
# with /proc/PID/clear_refs just before) next to the RSS before them.
# Usage: build/bench-reload.sh path/to/portcullis [signatures] [seconds] [workers] [reloads]
set -euo pipefail
bin="$(realpath "$1")"; sigs="${2:-1000000}"; seconds="${3:-40}"; workers="${4:-8}"; reloads="${5:-2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
kb() { awk -v k="$1" '/^'"$1"':/{print $2}' "/proc/$2/status"; }

mkdir -p "$work/db"
echo "generating $sigs signatures..."
python3 "$root/build/gen-signatures.py" "$work/db/bench.hdb" "$sigs"
cp "$root/build/test-signatures/portcullis-test.ndb" "$work/db/"
echo "signature folder: $(du -sh "$work/db" | cut -f1)"

printf '\n%-11s %8s %6s %6s %9s %9s %11s %11s %11s %11s %9s %11s %11s\n' mode messages 4xx 5xx/err accepted received p50-base p99-base p50-reload p99-reload reload-s rss-before peak-rss
for mode in concurrent low; do
  mkdir -p "$work/$mode/tmp"
  rm -f "$work/sink.port"
  python3 "$root/build/smtp_sink.py" --port-file "$work/sink.port" > "$work/$mode/sink.log" &
  sink=$!
  for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done   # readiness of a process we started
  port=$(free_port)
  cat > "$work/$mode/gw.ini" <<INI
[general]
interfaces = 127.0.0.1:$port
hostname = bench.local
smtp_server_port = $(cat "$work/sink.port")
temp_folder = $work/$mode/tmp
control_socket = $work/$mode/control.sock
[scan]
database_folder = $work/db
reload_memory = $mode
reload_check_interval = 0
scanner_threads = 2
[status]
listen =
INI
  "$bin" run --config "$work/$mode/gw.ini" > "$work/$mode/gw.log" 2> "$work/$mode/gw.err" &
  gw=$!
  for _ in $(seq 1200); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; kill -0 $gw; sleep 0.1; done

  python3 "$root/build/bench_reload.py" "$port" "$seconds" "$workers" > "$work/$mode/messages.txt" &
  driver=$!
  # Baseline first: a third of the run before the first reload, then reloads back to back with pauses.
  sleep "$(echo "$seconds / 3" | bc -l)"   # the bench's schedule, not synchronisation
  rss_before=$(kb VmRSS $gw)
  echo 5 > "/proc/$gw/clear_refs"
  : > "$work/$mode/reloads.txt"
  for _ in $(seq "$reloads"); do
    start=$(date +%s.%N)
    "$bin" reload --config "$work/$mode/gw.ini" > "$work/$mode/reload.out"
    end=$(date +%s.%N)
    echo "$start $end" >> "$work/$mode/reloads.txt"
    sleep 2
  done
  peak=$(kb VmHWM $gw)
  wait $driver
  kill -TERM $gw; wait $gw || true
  kill -TERM $sink; wait $sink || true
  received=$(sed -nE 's/^received ([0-9]+)/\1/p' "$work/$mode/sink.log")

  python3 - "$work/$mode/messages.txt" "$work/$mode/reloads.txt" "$mode" "$received" "$rss_before" "$peak" <<'PY'
import sys
msgs = [l.split() for l in open(sys.argv[1])]
windows = [tuple(map(float, l.split())) for l in open(sys.argv[2])]
mode, received, rss_before, peak = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def during(start, latency):  # the message was in flight while a reload ran
    return any(start <= b and start + latency >= a for a, b in windows)
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")
base = [float(l) for s, l, c in msgs if not during(float(s), float(l))]
rel = [float(l) for s, l, c in msgs if during(float(s), float(l))]
codes = [int(c) for _, _, c in msgs]
t4 = sum(1 for c in codes if 400 <= c < 500)
t5 = sum(1 for c in codes if c >= 500 or c < 0)
ok = sum(1 for c in codes if c == 250)
took = max(b - a for a, b in windows)
print(f"{mode:<11} {len(msgs):>8} {t4:>6} {t5:>6} {ok:>9} {received:>9} {pct(base,50):>9.1f}ms {pct(base,99):>9.1f}ms "
      f"{pct(rel,50):>9.1f}ms {pct(rel,99):>9.1f}ms {took:>9.1f} {rss_before/1024:>9.0f}MB {peak/1024:>9.0f}MB")
print(f"            ({len(rel)} messages overlapped a reload; lost = accepted - received = {ok - received})")
PY
  grep -h "signatures reloaded" "$work/$mode/gw.err" | sed 's/^<6>/            /' | tail -1
done
