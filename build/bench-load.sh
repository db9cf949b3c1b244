#!/usr/bin/env bash
# Load benchmark for `make bench` (build/bench.py says what it measures and how): 2 KB, 100 KB
# and 5 MB messages straight to smtp-sink and through portcullis in interleaved rounds, latency,
# CPU and memory per message next to libclamav's own, and a burst of simultaneous senders.
# Prints measurements, asserts nothing. BENCH_QUICK=1 for a 1-2 minute smoke.
# Usage: build/bench-load.sh path/to/portcullis
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 path/to/portcullis" >&2; exit 64; }
# 200+ simultaneous clients plus as many downstream connections, for the gateway and the clients.
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=65536
ulimit -n "$(( hard < 65536 ? hard : 65536 ))"
exec python3 "$(dirname "$0")/bench.py" "$1"
