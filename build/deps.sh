#!/usr/bin/env bash
# Installs the Debian packages Portcullis builds, runs and tests with, if any is missing.
# Usage: build/deps.sh [run|test|bench]   (default: test)
set -euo pipefail

run_pkgs=(libclamav12 clamav clamav-testfiles clang lld zlib1g-dev)
test_pkgs=("${run_pkgs[@]}" libclamav-dev swaks ucspi-tcp haproxy openssl apache2-utils)
bench_pkgs=("${test_pkgs[@]}" postfix bc python3)

case "${1:-test}" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${test_pkgs[@]}") ;;
  bench) want=("${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [run|test|bench]" >&2; exit 64 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
