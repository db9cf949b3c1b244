#!/usr/bin/env bash
# Where the gateway's CPU goes under the 2 KB load of `make bench` (docs/PERFORMANCE.md): a gateway
# forwarding to smtp-sink, smtp-source sending 2 KB messages (4 clients, a new connection per
# message) while `perf record -g` samples the gateway; then the top entries by self and by
# children (inclusive) time. Symbols: a binary published with -p:StripSymbols=false, or the
# portcullis.dbg next to a stripped one (registered in perf's build-id cache here).
# Loopback only; everything started here is stopped at the end.
# Usage: build/bench-profile.sh path/to/portcullis [seconds (20)] [output folder (artifacts/profile)]
set -euo pipefail
bin="$(realpath "$1")"; seconds="${2:-20}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${3:-$root/artifacts/profile}")"
mkdir -p "$out"
work="$(mktemp -d)"; chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if [ -f "$bin.dbg" ]; then perf buildid-cache -a "$bin.dbg" 2>/dev/null || true; fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 400); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2; return 1
}
sink_port=$(free_port); gw_port=$(free_port)
smtp-sink -u nobody -c "127.0.0.1:$sink_port" 1024 >/dev/null 2>&1 & pids+=($!)
mkdir -p "$work/db" "$work/tmp" "$work/queue" "$work/quarantine" "$work/scratch"
python3 "$root/build/gen-signatures.py" "$work/db/bench.hdb" 1000
python3 - "$work/2k.eml" <<'PY'
import sys
text = "From: <bench@client.test>\nTo: <sink@dest.test>\nSubject: bench 2 KB\nMIME-Version: 1.0\n\n"
while len(text) < 1970:
    text += "The quick brown fox jumps over the lazy dog, and the report follows below.\n"
open(sys.argv[1], "w").write(text)
PY
cat > "$work/gw.ini" <<INI
[general]
interfaces = 127.0.0.1:$gw_port
hostname = bench.local
smtp_server_address = 127.0.0.1
smtp_server_port = $sink_port
temp_folder = $work/tmp
queue_folder = $work/queue
control_socket = $work/control.sock
[scan]
database_folder = $work/db
scratch_folder = /dev/shm
[quarantine]
folder = $work/quarantine
[status]
listen =
INI
"$bin" run --config "$work/gw.ini" >"$work/gw.log" 2>&1 & gw=$!; pids+=($gw)
wait_port "$gw_port"; wait_port "$sink_port"
smtp-source -s 4 -m 200 -F "$work/2k.eml" -f bench@client.test -t sink@dest.test "127.0.0.1:$gw_port"   # warm-up

# The load runs until perf has its samples; smtp-source is restarted until then.
( while :; do smtp-source -s 4 -m 2000 -F "$work/2k.eml" -f bench@client.test -t sink@dest.test "127.0.0.1:$gw_port" || break; done ) &
load=$!; pids+=($load)
perf record -F 999 -g -p "$gw" -o "$out/perf.data" -- sleep "$seconds" 2>"$out/record.txt"
kill "$load" 2>/dev/null || true
echo "delivered during the run: $(grep -c 'action=delivered' "$work/gw.log" || true)"

# Self: where the samples land; children: inclusive time of each function with its callees.
report() { perf report -i "$out/perf.data" --stdio -g none "$@" 2>/dev/null | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//'; }
report --no-children --sort dso > "$out/dso.txt"
report --no-children --sort comm > "$out/threads.txt"
report --no-children --sort symbol --percent-limit 0.4 > "$out/self.txt"
report --no-children --sort symbol --dsos portcullis --percent-limit 0.2 > "$out/self-portcullis.txt"
report --children --sort symbol --percent-limit 2 > "$out/children.txt"
echo "== by DSO"; grep -v '^#' "$out/dso.txt" | head -8
echo "== by thread"; grep -v '^#' "$out/threads.txt" | head -10
echo "== self, top 30"; grep -v '^#' "$out/self.txt" | head -30
echo "== self within portcullis (share of all samples), top 30"; grep -v '^#' "$out/self-portcullis.txt" | head -30
echo "== children (inclusive), top 60"; grep -v '^#' "$out/children.txt" | head -60
