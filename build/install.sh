#!/usr/bin/env bash
# Lays out the binary and rootfs/ under DESTDIR as they land on the target system.
# Usage: build/install.sh DESTDIR path/to/portcullis
# The folders the gateway writes to (/var/lib/portcullis with its quarantine, /var/spool/portcullis) are made on
# the target by tmpfiles.d (with the portcullis owner), not here.
set -euo pipefail
dest="${1:?usage: $0 DESTDIR BINARY}"; bin="${2:?usage: $0 DESTDIR BINARY}"
root="$(cd "$(dirname "$0")/.." && pwd)"
r="$root/rootfs"

install -D -m 0755 "$bin" "$dest/usr/bin/portcullis"
install -D -m 0644 "$r/etc/portcullis/portcullis.ini" "$dest/etc/portcullis/portcullis.ini"
for template in "$r"/etc/portcullis/templates/*.txt; do
  install -D -m 0644 "$template" "$dest/etc/portcullis/templates/$(basename "$template")"
done
install -D -m 0755 "$r/etc/clamav/onupdateexecute.d/portcullis" "$dest/etc/clamav/onupdateexecute.d/portcullis"
install -D -m 0644 "$r/lib/systemd/system/portcullis.service" "$dest/lib/systemd/system/portcullis.service"
install -D -m 0644 "$r/lib/systemd/system/portcullis.socket" "$dest/lib/systemd/system/portcullis.socket"
install -D -m 0644 "$r/usr/lib/sysusers.d/portcullis.conf" "$dest/usr/lib/sysusers.d/portcullis.conf"
install -D -m 0644 "$r/usr/lib/tmpfiles.d/portcullis.conf" "$dest/usr/lib/tmpfiles.d/portcullis.conf"
install -D -m 0755 "$r/usr/lib/portcullis/dovecot-pop-before-smtp" "$dest/usr/lib/portcullis/dovecot-pop-before-smtp"
install -D -m 0644 "$r/etc/logrotate.d/portcullis" "$dest/etc/logrotate.d/portcullis"
install -D -m 0644 "$r/etc/apparmor.d/local/portcullis-freshclam-hook" "$dest/etc/apparmor.d/local/portcullis-freshclam-hook"
install -D -m 0644 "$r/usr/share/bash-completion/completions/portcullis" "$dest/usr/share/bash-completion/completions/portcullis"
install -D -m 0644 "$root/README.md" "$dest/usr/share/doc/portcullis/README.md"
