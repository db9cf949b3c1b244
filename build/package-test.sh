#!/usr/bin/env bash
# End-to-end test of the .deb as an admin uses it: apt install ./portcullis_*.deb, apt remove,
# apt install again, apt purge (keeps the quarantine and spool), then install and purge with the
# debconf answer "delete". Runs in a throw-away root: a private mount namespace where /etc, /usr
# and /var are overlays on a tmpfs, so the machine is left exactly as it was and no mirror is
# needed (every dependency must already be installed here: build/deps.sh package).
# Usage: build/package-test.sh path/to/portcullis_VERSION_ARCH.deb
# Prints one "ok"/"FAIL" line per check and closes with "package-test: N passed, N failed".
set -euo pipefail
deb="$(realpath "${1:?usage: $0 portcullis_VERSION_ARCH.deb}")"
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${PACKAGE_TEST_INSIDE:-}" != 1 ]; then
  state="$(dpkg-query -W -f='${db:Status-Status}' portcullis 2>/dev/null || true)"
  if [ -n "$state" ] && [ "$state" != not-installed ]; then
    echo "package-test: portcullis is installed on this machine; the test needs a machine without it" >&2
    echo "package-test: 0 passed, 1 failed"; exit 1
  fi
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  # The namespace (and with it every mount) ends with the inner script.
  rc=0
  unshare --mount --propagation private env PACKAGE_TEST_INSIDE=1 PACKAGE_TEST_SCRATCH="$scratch" \
    "$0" "$deb" || rc=$?
  exit $rc
fi

scratch="$PACKAGE_TEST_SCRATCH"
mount -t tmpfs package-test "$scratch"
for d in etc usr var; do
  mkdir -p "$scratch/$d.upper" "$scratch/$d.work"
  mount -t overlay "package-test-$d" -o "lowerdir=/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d"
done
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
# man-db's index update after each apt run takes most of the time and is not under test.
echo "man-db man-db/auto-update boolean false" | debconf-set-selections

passed=0; failed=0
apt_ok() { # apt_ok "what" LOGNAME args...: apt's output is shown, indented; its exit status is the check
  local what="$1"; shift
  local t0=$SECONDS
  if apt_run "$@"; then echo "ok - $what ($((SECONDS - t0)) s)"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
check() { # check "what" command...
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then echo "ok - $what"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
status() { dpkg-query -W -f='${Status}' portcullis 2>/dev/null || true; }
apt_run() { # apt_run LOGNAME args...: apt's output is shown, indented, and kept for checks
  local name="$1"; shift
  echo "# apt $*"
  apt -o Dpkg::Use-Pty=0 -o APT::Install-Recommends=false "$@" 2>&1 \
    | grep -v '^WARNING: apt does not have a stable CLI interface' | grep -v '^$' | tee "$scratch/$name.log" | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}
wants=/etc/systemd/system/multi-user.target.wants/portcullis.service
quarantined=/var/lib/portcullis/quarantine/20261206-021500-3f2a9c01.eml
spooled=/var/spool/portcullis/outbox/notification.eml
logged=/var/log/portcullis/portcullis-2026-12-06.log
aa_local=/etc/apparmor.d/local/usr.bin.freshclam
aa_line='include if exists <local/portcullis-freshclam-hook>'
has_line() { grep -qxF "$2" "$1"; }
owned() { [ "$(stat -c '%U:%G %a' "$1")" = "$2" ]; }

echo "=== apt install ./$(basename "$deb")"
apt_ok "apt install exits 0" install1 install -y "$deb"
check "installed" test "$(status)" = "install ok installed"
check "user portcullis (sysusers.d), in group ssl-cert's reach: group exists" getent group ssl-cert
check "user portcullis exists with nologin shell" sh -c 'getent passwd portcullis | grep -q ":/usr/sbin/nologin$"'
check "/var/lib/portcullis/quarantine portcullis:portcullis 700 (tmpfiles.d)" owned /var/lib/portcullis/quarantine "portcullis:portcullis 700"
check "/var/spool/portcullis portcullis:portcullis 750" owned /var/spool/portcullis "portcullis:portcullis 750"
check "portcullis.ini is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' portcullis | grep -q ' /etc/portcullis/portcullis.ini '"
check "md5sums verify (dpkg --verify)" dpkg --verify portcullis
check "man portcullis and man portcullis.ini find the pages" sh -c 'man -w 8 portcullis && man -w 5 portcullis.ini'
check "logrotate file installed and valid (logrotate -d)" logrotate -d /etc/logrotate.d/portcullis
check "/usr/bin/portcullis runs (portcullis version)" /usr/bin/portcullis version
check "the unit is not enabled on install (port 25 is the MTA's)" test ! -e "$wants"
check "prerm stops the units on remove (deb-systemd-invoke) and disables nothing" sh -c \
  "grep -q 'deb-systemd-invoke stop' /var/lib/dpkg/info/portcullis.prerm && ! grep -q disable /var/lib/dpkg/info/portcullis.prerm"
check "postinst said how to enable OnUpdateExecute" sh -c "! test -e /etc/clamav/freshclam.conf || grep -qi '^OnUpdateExecute' /etc/clamav/freshclam.conf || grep -q 'OnUpdateExecute /bin/run-parts' '$scratch/install1.log'"
if getent passwd clamav >/dev/null; then
  check "clamav is in group portcullis (freshclam's hook reaches the control socket)" sh -c 'id -nG clamav | tr " " "\n" | grep -qx portcullis'
fi
if [ -e /etc/apparmor.d/usr.bin.freshclam ]; then
  check "freshclam's AppArmor local file includes the hook rules" has_line "$aa_local" "$aa_line"
  if command -v apparmor_parser >/dev/null; then
    check "freshclam's profile with the hook rules compiles (apparmor_parser -Q)" apparmor_parser -Q -K -T /etc/apparmor.d/usr.bin.freshclam
  fi
  # clamav-freshclam installed or upgraded later: the file trigger puts the line back.
  sed -i "\|^$aa_line\$|d" "$aa_local"
  check "dpkg trigger on /usr/bin/freshclam restores the include" sh -c "dpkg-trigger --no-await /usr/bin/freshclam && dpkg --triggers-only portcullis && grep -qxF '$aa_line' '$aa_local'"
fi

# freshclam's hook, run as freshclam runs it (user clamav): it reaches the gateway on the
# control_socket the configuration names, and is quiet when no gateway answers.
hook=/etc/clamav/onupdateexecute.d/portcullis
if getent passwd clamav >/dev/null; then
  ctl=/var/tmp/portcullis-package-test; mkdir -p "$ctl"; chmod 0755 "$ctl"
  cp /etc/portcullis/portcullis.ini "$scratch/portcullis.ini.orig"
  sed -i "s|^control_socket = .*|control_socket = $ctl/control.sock|" /etc/portcullis/portcullis.ini
  python3 - "$ctl/control.sock" "$scratch/received" <<'PY' &
import os, socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); server.listen(1)
server.settimeout(60)  # no hook came: end, and let the checks fail
client, _ = server.accept()
request = client.makefile("rb").readline()
open(sys.argv[2], "wb").write(request)
client.sendall(b"signatures reloaded\nOK\n"); client.close()
PY
  gateway=$!
  for _ in $(seq 100); do [ -S "$ctl/control.sock" ] && break; sleep 0.1; done
  check "freshclam's hook (as clamav) asks for a reload on the configured control_socket" runuser -u clamav -- "$hook"
  check "the stand-in gateway got RELOAD" grep -qx RELOAD "$scratch/received"
  wait "$gateway" || true
  check "the hook exits 0, silent, when no gateway answers" sh -c "out=\$(runuser -u clamav -- '$hook' 2>&1) && test -z \"\$out\""
  cp "$scratch/portcullis.ini.orig" /etc/portcullis/portcullis.ini; rm -rf "$ctl"
fi

# logrotate as the daily timer runs it: today's file is left alone (the gateway writes to it),
# older days are compressed, compressed files older than 30 days are removed.
install -d -o portcullis -g portcullis -m 0750 /var/log/portcullis
today="/var/log/portcullis/portcullis-$(date +%F).log"
older="/var/log/portcullis/portcullis-$(date -d '-2 days' +%F).log"
ancient="/var/log/portcullis/portcullis-$(date -d '-40 days' +%F).log"
for f in "$today" "$older" "$ancient"; do echo "line" > "$f"; chown portcullis:portcullis "$f"; done
touch -d '-2 days' "$older"; touch -d '-40 days' "$ancient"
seen="$(date -d '-3 days' +%Y-%-m-%-d-%-H:%-M:%-S)"
printf 'logrotate state -- version 2\n"%s" %s\n"%s" %s\n"%s" %s\n' "$today" "$seen" "$older" "$seen" "$ancient" "$seen" > "$scratch/logrotate.state"
logrotate -s "$scratch/logrotate.state" /etc/logrotate.d/portcullis 2>/dev/null || true
check "logrotate leaves today's message log in place" test -f "$today"
check "logrotate compresses an older day's log" test -f "$older.1.gz" -a ! -e "$older"
check "logrotate removes logs older than 30 days" test ! -e "$ancient" -a ! -e "$ancient.1.gz"
rm -f /var/log/portcullis/*

# What the admin and the gateway leave behind: an enabled unit, a quarantine entry, a
# notification in the spool, a message log.
systemctl enable portcullis.service >/dev/null 2>&1
mkdir -p "$(dirname "$spooled")" /var/log/portcullis
echo quarantined > "$quarantined"; echo spooled > "$spooled"; echo logged > "$logged"
check "(setup) the admin enabled portcullis.service" test -L "$wants"

echo "=== apt remove portcullis"
apt_ok "apt remove exits 0" remove1 remove -y portcullis
check "removed, configuration kept" test "$(status)" = "deinstall ok config-files"
check "/usr/bin/portcullis is gone" test ! -e /usr/bin/portcullis
check "/etc/portcullis/portcullis.ini kept" test -f /etc/portcullis/portcullis.ini
check "remove did not disable the unit" test -L "$wants"
check "quarantine and spool kept" test -f "$quarantined" -a -f "$spooled"

echo "=== apt install ./$(basename "$deb") again"
apt_ok "apt install exits 0" install2 install -y "$deb"
check "installed" test "$(status)" = "install ok installed"
check "still enabled, not masked" sh -c "test -L '$wants' && ! test -L /etc/systemd/system/portcullis.service"
check "quarantine entry still there" test -f "$quarantined"
check "the OnUpdateExecute note came only the first time" sh -c "! grep -q 'OnUpdateExecute' '$scratch/install2.log'"

echo "=== apt purge portcullis (debconf default: keep the quarantine and the spool)"
apt_ok "apt purge exits 0" purge1 purge -y portcullis
check "purged" test -z "$(status)" -o "$(status)" = "unknown ok not-installed"
check "/etc/portcullis is gone" test ! -e /etc/portcullis
check "the unit's enablement is gone" test ! -e "$wants"
check "quarantine kept" test -f "$quarantined"
check "spool kept" test -f "$spooled"
check "message logs removed" test ! -e /var/log/portcullis
if [ -f "$aa_local" ]; then
  check "the include left freshclam's AppArmor local file" sh -c "! grep -qF 'portcullis' '$aa_local'"
fi

echo "=== apt install, then apt purge with portcullis/purge_data = true (debconf-set-selections)"
apt_ok "apt install exits 0" install3 install -y "$deb"
echo "portcullis portcullis/purge_data boolean true" | debconf-set-selections
apt_ok "apt purge exits 0" purge2 purge -y portcullis
check "quarantine (/var/lib/portcullis) deleted" test ! -e /var/lib/portcullis
check "spool (/var/spool/portcullis) deleted" test ! -e /var/spool/portcullis
check "the answer was purged from debconf" sh -c '! debconf-show portcullis 2>/dev/null | grep -q purge_data'

echo
if [ "$failed" -eq 0 ]; then echo "package-test: PASSED"; else echo "package-test: FAILED"; fi
echo "package-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
