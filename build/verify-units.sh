#!/usr/bin/env bash
# systemd-analyze verify on the shipped units, offline (systemd need not be PID 1): the units
# and the binary are laid into a scratch root with the host's targets and slices, and any
# complaint at all (verify exits 0 on mere warnings such as an unknown Type=) fails the check.
# Usage: build/verify-units.sh path/to/portcullis   (needs pandoc for the manual pages)
set -euo pipefail
bin="$(realpath "${1:?usage: $0 BINARY}")"
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

"$root/build/install.sh" "$scratch" "$bin"
# Documentation=man:portcullis(8) man:portcullis.ini(5): verify runs man(1) for each, so the
# pages are built and found through MANPATH, as the package installs them.
"$root/build/man.sh" "$scratch/man" >/dev/null
install -D -m 0644 "$scratch/man/portcullis.8" "$scratch/usr/share/man/man8/portcullis.8"
install -D -m 0644 "$scratch/man/portcullis.ini.5" "$scratch/usr/share/man/man5/portcullis.ini.5"
export MANPATH="$scratch/usr/share/man"
cp -n /lib/systemd/system/*.target /lib/systemd/system/*.slice "$scratch/lib/systemd/system/" 2>/dev/null || true
out="$(systemd-analyze verify --root="$scratch" /lib/systemd/system/portcullis.service /lib/systemd/system/portcullis.socket 2>&1)" || {
  echo "$out"; echo "systemd-analyze verify: FAILED"; exit 1; }
if [ -n "$out" ]; then echo "$out"; echo "systemd-analyze verify: complaints above"; exit 1; fi
echo "systemd-analyze verify: portcullis.service and portcullis.socket OK ($(systemctl --version | head -1))"
