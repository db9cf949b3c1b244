#!/usr/bin/env bash
# Runs every test project (unit, then end-to-end against the published binary), then
# systemd-analyze verify on the units, the .deb's build/lintian/install-remove-purge cycle and, when PORTCULLIS_ARM64_BIN is set, the arm64 smoke
# test under qemu; prints one closing line: "tests: N passed, N failed, N skipped".
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$root/artifacts/publish/linux-x64/portcullis}"

passed=0; failed=0; skipped=0; status=0
for project in tests/SmtpCore.Tests tests/NativeScan.Tests tests/Appliance.Tests tests/EndToEnd; do
  echo "=== $project"
  log=$(mktemp)
  dotnet test "$project" -c Release --nologo -v q 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E "^(Passed|Failed)!" "$log" | tail -1)
  p=$(sed -nE 's/.*Passed: *([0-9]+).*/\1/p' <<<"$line"); f=$(sed -nE 's/.*Failed: *([0-9]+).*/\1/p' <<<"$line"); s=$(sed -nE 's/.*Skipped: *([0-9]+).*/\1/p' <<<"$line")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ]; then
    status=1
    [ -z "$line" ] && failed=$((failed + 1)) # the project did not build or run at all
  fi
  rm -f "$log"
done
echo "=== systemd units"
if build/verify-units.sh "$PORTCULLIS_BIN"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi

echo "=== package: dpkg-buildpackage + lintian --pedantic, apt install/remove/install/purge (build/package-test.sh)"
if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the throw-away root needs root (unshare, mount)"; skipped=$((skipped + 1))
else
  pkgdir=$(mktemp -d)
  if build/package.sh amd64 "$PORTCULLIS_BIN" "$pkgdir" && build/package-test.sh "$pkgdir"/portcullis_*_amd64.deb; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); status=1
  fi
  rm -rf "$pkgdir"
fi

if [ -n "${PORTCULLIS_ARM64_BIN:-}" ]; then
  echo "=== arm64 smoke test (qemu-aarch64-static)"
  log=$(mktemp)
  build/smoke-arm64.sh "$PORTCULLIS_ARM64_BIN" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E "^arm64 smoke: [0-9]+ passed" "$log" | tail -1)
  p=$(sed -nE 's/.*: ([0-9]+) passed.*/\1/p' <<<"$line"); f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ "$rc" -ne 0 ]; then status=1; [ -z "$line" ] && failed=$((failed + 1)); fi
  rm -f "$log"
fi

echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
