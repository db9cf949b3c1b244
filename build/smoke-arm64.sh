#!/usr/bin/env bash
# The linux-arm64 binary under qemu-aarch64-static (the arm64 libc and libclamav come from the
# foreign-architecture packages build/deps.sh arm64 installs): `version`, `scan` of Debian's
# clam.exe test file and of a clean file, and one full SMTP transaction through `run`.
# Usage: build/smoke-arm64.sh path/to/linux-arm64/portcullis
set -euo pipefail
bin="$(realpath "${1:?usage: $0 BINARY}")"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
qemu=(qemu-aarch64-static -L /)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
pass=0; fail=0
check() { if [ "$1" = "$2" ]; then echo "ok: $3"; pass=$((pass + 1)); else echo "FAILED: $3 (got $1, expected $2)"; fail=$((fail + 1)); fi; }

file "$bin" | grep -q 'ARM aarch64' || { echo "$bin is not an arm64 binary"; exit 1; }
"${qemu[@]}" "$bin" version

mkdir -p "$work/tmp" "$work/mail"
cat > "$work/scan.ini" <<INI
[general]
temp_folder = $work/tmp
[scan]
database_folder = $root/build/test-signatures
INI
rc=0; "${qemu[@]}" "$bin" scan --config "$work/scan.ini" /usr/share/clamav-testfiles/clam.exe || rc=$?
check "$rc" 1 "scan finds clam.exe (exit 1)"
printf 'nothing to see here\n' > "$work/clean.txt"
rc=0; "${qemu[@]}" "$bin" scan --config "$work/scan.ini" "$work/clean.txt" || rc=$?
check "$rc" 0 "scan passes a clean file (exit 0)"

python3 "$root/build/smtp_sink.py" --port-file "$work/sink.port" --out "$work/mail" > "$work/sink.log" &
sink=$!
gw_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done   # readiness of a process we started
cat > "$work/gw.ini" <<INI
[general]
interfaces = 127.0.0.1:$gw_port
hostname = arm64.test
smtp_server_port = $(cat "$work/sink.port")
temp_folder = $work/tmp
control_socket = $work/control.sock
[scan]
database_folder = $root/build/test-signatures
scanner_threads = 1
[status]
listen =
INI
"${qemu[@]}" "$bin" run --config "$work/gw.ini" > "$work/gw.log" 2> "$work/gw.err" &
gw=$!
for _ in $(seq 600); do (echo > /dev/tcp/127.0.0.1/$gw_port) 2>/dev/null && break; kill -0 $gw || break; sleep 0.1; done
rc=0
swaks --server 127.0.0.1:$gw_port --from arm64@example.org --to sink@example.net --body "arm64 smoke test" \
      --hide-all --timeout 60 || rc=$?
check "$rc" 0 "SMTP transaction through the arm64 gateway"
got=$(ls "$work/mail" | wc -l)
check "$got" 1 "downstream received the message"
grep -q '^X-Virus-Scanned: portcullis' "$work/mail/1.eml" 2>/dev/null && hdr=yes || hdr=no
check "$hdr" yes "message carries X-Virus-Scanned"
rc=0; "${qemu[@]}" "$bin" status --config "$work/gw.ini" > "$work/status.txt" || rc=$?
check "$rc" 0 "portcullis status over the control socket"
kill -TERM $gw; rc=0; wait $gw || rc=$?
check "$rc" 0 "SIGTERM: clean exit"
if [ $fail -ne 0 ]; then echo "--- gateway stdout"; cat "$work/gw.log"; echo "--- stderr"; cat "$work/gw.err"; fi
echo "arm64 smoke: $pass passed, $fail failed"
[ $fail -eq 0 ]
