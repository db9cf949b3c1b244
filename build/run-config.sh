#!/usr/bin/env bash
# Writes the configuration `make run` uses: 127.0.0.1:2525 forwarding to 127.0.0.1:25,
# the official databases in /var/lib/clamav when freshclam has filled it, otherwise the
# test signatures in build/test-signatures (which detect only test files).
set -euo pipefail
out="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$(dirname "$out")" "$root/artifacts/run/tmp" "$root/artifacts/run/queue" "$root/artifacts/run/quarantine"

db=/var/lib/clamav
if ! ls "$db"/*.cvd "$db"/*.cld >/dev/null 2>&1; then
  echo "warning: no ClamAV databases in /var/lib/clamav (run freshclam); using the test signatures in build/test-signatures, which detect only test files" >&2
  db="$root/build/test-signatures"
fi

cat > "$out" <<INI
; Written by build/run-config.sh for \`make run\`. See rootfs/etc/portcullis/portcullis.ini for every key.
[general]
interfaces = 127.0.0.1:2525
hostname = localhost
smtp_server_address = 127.0.0.1
smtp_server_port = 25
temp_folder = $root/artifacts/run/tmp
queue_folder = $root/artifacts/run/queue
control_socket = $root/artifacts/run/control.sock

[scan]
database_folder = $db
; tmpfs, as the package's /run/portcullis/scan (docs/PERFORMANCE.md)
scratch_folder = /dev/shm/portcullis-run-$(id -u)

[quarantine]
folder = $root/artifacts/run/quarantine

[notification]
template_folder = $root/rootfs/etc/portcullis/templates
INI
echo "$out"
