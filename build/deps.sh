#!/usr/bin/env bash
# Installs the Debian packages Portcullis builds, runs and tests with, if any is missing.
# Usage: build/deps.sh [run|test|bench|profile|arm64|package]   (default: test)
#   arm64    the linux-arm64 cross toolchain and sysroot (adds the arm64 dpkg architecture) and
#            qemu-aarch64-static for the smoke test
#   package  dpkg-buildpackage with debhelper, lintian, pandoc (manual pages), systemd-analyze, and what
#            build/package-test.sh installs the .deb against (apparmor_parser checks the freshclam rules)
set -euo pipefail

run_pkgs=(libclamav12 clamav clamav-testfiles clang lld zlib1g-dev libcrypt1)
test_pkgs=("${run_pkgs[@]}" libclamav-dev swaks ucspi-tcp haproxy openssl apache2-utils python3 whois p7zip-full)
test_pkgs+=(postfix dovecot-pop3d)   # private instances in the Postfix XCLIENT and Dovecot POP-before-SMTP tests
bench_pkgs=("${test_pkgs[@]}" bc python3)
profile_pkgs=("${bench_pkgs[@]}" linux-perf)
arm64_pkgs=(gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user-static zlib1g-dev:arm64 libc6-dev:arm64 libclamav12:arm64 libcrypt1:arm64)
package_pkgs=(dpkg-dev build-essential debhelper lintian pandoc man-db debconf logrotate apparmor systemd ssl-cert adduser)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

case "${1:-test}" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${test_pkgs[@]}") ;;
  bench) want=("${bench_pkgs[@]}") ;;
  profile) want=("${profile_pkgs[@]}") ;;
  arm64)
    want=("${arm64_pkgs[@]}")
    # Cross packages come from the same Debian mirror, as a foreign architecture.
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      $sudo dpkg --add-architecture arm64
    fi ;;
  package) want=("${package_pkgs[@]}") ;;
  *) echo "usage: $0 [run|test|bench|profile|arm64|package]" >&2; exit 64 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
