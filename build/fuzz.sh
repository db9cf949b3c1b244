#!/usr/bin/env bash
# `make fuzz`: AFL++ over SmtpCore's command parser, DATA/BDAT reader and path parser through
# SharpFuzz (tests/Fuzz). Each target runs for SECONDS (default 300) from the seeds in
# tests/Fuzz/corpus/TARGET; prints executions, paths, crashes and hangs per target and fails
# if any crash was saved (the crashing inputs stay in the findings folder, replay them with
# `dotnet <out>/Portcullis.Fuzz.dll TARGET FILE`).
# Usage: build/fuzz.sh [SECONDS] [TARGET...]   (targets: command data path)
set -euo pipefail
seconds="${1:-300}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(command data path)
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${PORTCULLIS_OBJ:-$root/artifacts}"
out="$base/fuzz/bin"; tools="$base/fuzz/tools"; findings="$base/fuzz/findings"

if ! command -v afl-fuzz >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends afl++ >/dev/null
fi
if [ ! -x "$tools/sharpfuzz" ]; then
  dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$tools" >/dev/null
fi

# A fresh publish each time: sharpfuzz rewrites the assembly in place, once.
rm -rf "$out"
dotnet publish "$root/tests/Fuzz/Fuzz.csproj" -c Release -o "$out" --nologo -v q
"$tools/sharpfuzz" "$out/Portcullis.SmtpCore.dll"

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1
status=0
for target in "${targets[@]}"; do
  rm -rf "${findings:?}/$target"
  mkdir -p "$findings"
  echo "=== $target: afl-fuzz for ${seconds}s"
  afl-fuzz -V "$seconds" -t 5000 -m none -i "$root/tests/Fuzz/corpus/$target" -o "$findings/$target" \
    -- dotnet "$out/Portcullis.Fuzz.dll" "$target" >"$findings/$target.log" 2>&1 || true
  stats="$findings/$target/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    echo "afl-fuzz did not run; last lines of its log:"; tail -20 "$findings/$target.log"; status=1; continue
  fi
  get() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$stats"; }
  crashes=$(get saved_crashes); hangs=$(get saved_hangs)
  echo "$target: executions $(get execs_done) in $(get run_time)s ($(get execs_per_sec)/s), corpus $(get corpus_count), crashes $crashes, hangs $hangs, edges $(get edges_found)"
  if [ "${crashes:-0}" != 0 ]; then
    status=1
    ls "$findings/$target/default/crashes"
  fi
done
exit $status
