#!/usr/bin/env bash
# Builds portcullis_VERSION_ARCH.deb with dpkg-deb from a published binary and rootfs/.
# Usage: build/package.sh amd64|arm64 path/to/portcullis OUTDIR
set -euo pipefail
arch="${1:?usage: $0 amd64|arm64 BINARY OUTDIR}"; bin="${2:?}"; out="${3:?}"
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -nE 's|.*<Version>([^<]+)</Version>.*|\1|p' "$root/Directory.Build.props" | head -1)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

chmod 0755 "$stage"
"$root/build/install.sh" "$stage" "$bin"
mkdir -p "$stage/DEBIAN" "$out"
for script in postinst prerm postrm; do
  install -m 0755 "$root/build/debian/$script" "$stage/DEBIAN/$script"
done
cat > "$stage/DEBIAN/conffiles" <<CONF
/etc/portcullis/portcullis.ini
/etc/clamav/onupdateexecute.d/portcullis
CONF
(cd "$stage" && find etc/portcullis/templates -type f | sed 's|^|/|') >> "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: portcullis
Version: $version
Architecture: $arch
Maintainer: Portcullis maintainers <portcullis@localhost>
Installed-Size: $size
Section: mail
Priority: optional
Depends: libc6 (>= 2.34), libclamav12, libcrypt1 (>= 1:4.4), adduser
Recommends: clamav-freshclam
Suggests: clamav-testfiles
Description: SMTP antivirus gateway with in-process libclamav scanning
 Portcullis sits on port 25 in front of a real mail server, scans every
 message with libclamav while the client waits, forwards only clean mail and
 answers the client only after the mail server has accepted the message.
 One Native-AOT binary, a systemd unit with watchdog and socket activation,
 hot signature reloads driven by freshclam.
CONTROL
deb="$out/portcullis_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb ($(stat -c %s "$deb") bytes)"
