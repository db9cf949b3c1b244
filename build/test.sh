#!/usr/bin/env bash
# Runs every test project (unit, then end-to-end against the published binary) and prints
# one closing line: "tests: N passed, N failed, N skipped".
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
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
