#!/usr/bin/env bash
# Builds portcullis_VERSION_ARCH.deb with dpkg-buildpackage and debhelper from build/debian/, a
# prebuilt binary (`make publish` / `make publish-arm64`), rootfs/ and the manual pages, then
# runs lintian --pedantic on it (any tag not overridden in debian/portcullis.lintian-overrides
# fails the build).
# Usage: build/package.sh amd64|arm64 path/to/portcullis OUTDIR
#   DEB_MAINTAINER  "Name <address>" for Maintainer: and the changelog trailer; default: git's
#                   user.name and user.email (as dch does), else the author of the last commit.
set -euo pipefail
arch="${1:?usage: $0 amd64|arm64 BINARY OUTDIR}"; bin="$(realpath "${2:?}")"; out="${3:?}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"; out="$(realpath "$out")"
version="$(sed -nE 's|.*<Version>([^<]+)</Version>.*|\1|p' "$root/Directory.Build.props" | head -1)"
changelog_version="$(sed -nE '1s/^portcullis \(([^)]+)\).*/\1/p' "$root/build/debian/changelog")"
if [ "$changelog_version" != "$version" ]; then
  echo "package: build/debian/changelog is at $changelog_version, Directory.Build.props at $version: add a changelog entry" >&2
  exit 1
fi
maintainer="${DEB_MAINTAINER:-}"
if [ -z "$maintainer" ] && git -C "$root" config user.email >/dev/null; then
  maintainer="$(git -C "$root" config user.name) <$(git -C "$root" config user.email)>"
fi
if [ -z "$maintainer" ]; then maintainer="$(git -C "$root" log -1 --format='%an <%ae>')"; fi
case "$maintainer" in
  *" <"*@*">") ;;
  *) echo "package: DEB_MAINTAINER must be \"Name <address>\" (got \"$maintainer\")" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src="$work/portcullis-$version"
mkdir -p "$src/bin" "$src/completions"
cp -r "$root/build/debian" "$src/debian"
sed -i "s|@MAINTAINER@|$maintainer|" "$src/debian/control" "$src/debian/changelog"
cp -r "$root/rootfs" "$src/rootfs"
cp "$root/README.md" "$src/README.md"
install -m 0755 "$bin" "$src/bin/portcullis"
"$root/build/man.sh" "$src/man" >/dev/null
# Files the dh_install* helpers take from debian/portcullis.<kind>; rootfs/ stays the one source.
r="$src/rootfs"
cp "$r/lib/systemd/system/portcullis.service" "$src/debian/portcullis.service"
cp "$r/lib/systemd/system/portcullis.socket" "$src/debian/portcullis.socket"
cp "$r/usr/lib/sysusers.d/portcullis.conf" "$src/debian/portcullis.sysusers"
cp "$r/usr/lib/tmpfiles.d/portcullis.conf" "$src/debian/portcullis.tmpfiles"
cp "$r/etc/logrotate.d/portcullis" "$src/debian/portcullis.logrotate"
# Bash completion comes with the System.CommandLine work; packed when it is there.
completion="$r/usr/share/bash-completion/completions/portcullis"
if [ -f "$completion" ]; then
  cp "$completion" "$src/completions/portcullis"
  echo "completions/portcullis usr/share/bash-completion/completions" >> "$src/debian/portcullis.install"
fi

cross=()
if [ "$arch" != "$(dpkg --print-architecture)" ]; then cross=(-a"$arch"); fi
log="$work/build.log"
if ! (cd "$src" && SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct)" \
      dpkg-buildpackage -b -us -uc "${cross[@]}" >"$log" 2>&1); then
  cat "$log" >&2
  echo "package: dpkg-buildpackage failed for $arch" >&2
  exit 1
fi
deb="portcullis_${version}_${arch}.deb"
mv "$work/$deb" "$out/$deb"
echo "$out/$deb ($(stat -c %s "$out/$deb") bytes)"

# lintian: every tag, pedantic included; overrides carry their reason in the overrides file.
# (lintian warns on stderr when run as root, as CI does; that line is not a finding.)
lint="$(lintian --pedantic --display-info "$out/$deb" 2>&1 | grep -v '^running with root privileges is not recommended!$' || true)"
if [ -n "$lint" ]; then
  echo "$lint"
  echo "lintian --pedantic $deb: FAILED"
  exit 1
fi
overridden="$(lintian --pedantic --display-info --show-overrides "$out/$deb" 2>/dev/null | grep -c '^O:' || true)"
echo "lintian --pedantic --display-info $deb: clean ($overridden overridden, each with its reason in debian/portcullis.lintian-overrides)"
