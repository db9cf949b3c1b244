#!/usr/bin/env bash
# Makes the manual pages portcullis(8) and portcullis.ini(5) from docs/man/*.md with pandoc.
# Usage: build/man.sh [OUTDIR]   (default artifacts/man)
# Version from Directory.Build.props; date from the last commit, so a rebuild gives the same pages.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/artifacts/man}"
version="$(sed -nE 's|.*<Version>([^<]+)</Version>.*|\1|p' "$root/Directory.Build.props" | head -1)"
date="$(git -C "$root" log -1 --format=%cd --date=format:'%B %Y' 2>/dev/null || date -u +'%B %Y')"
mkdir -p "$out"
for md in "$root"/docs/man/*.md; do
  page="$(basename "$md" .md)"   # portcullis.8, portcullis.ini.5
  pandoc --standalone --from markdown-smart --to man \
    --metadata footer="portcullis $version" --metadata date="$date" \
    -o "$out/$page" "$md"
  # groff's own check, as lintian runs it: any warning fails the build.
  warnings="$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$out/$page" 2>&1 >/dev/null || true)"
  if [ -n "$warnings" ]; then echo "$warnings" >&2; echo "man: $page has warnings" >&2; exit 1; fi
  echo "$out/$page"
done
