#!/usr/bin/env python3
"""`make bench` (through build/bench-load.sh): what the gateway costs next to the wire and next to
its own engine, for 2 KB, 100 KB and 5 MB messages, plus a burst of simultaneous senders.

For each size a fresh gateway (PORTCULLIS_GC_REPORT=1) forwards to Postfix's smtp-sink on loopback.
In interleaved rounds Postfix's smtp-source sends the same load (4 clients, a new connection per
message) straight to smtp-sink and through the gateway; then a small client here sends messages
one connection each (4 at a time) to time every message (connect to final reply), again direct
and through the gateway. Printed: msg/s and their ratio (total, and min-max over rounds), p50/p99
latency, the gateway's CPU per message (/proc/PID/stat utime+stime across its smtp-source runs)
next to libclamav's own CPU for the same message (`portcullis scan` of the file N times minus N
scans of a tiny file, so process start-up and engine load cancel out), peak RSS next to the RSS
right after the engine has loaded (no traffic yet), and managed bytes allocated per message (the
daemon's exit report, minus an idle start/stop). The burst: N clients open their transactions,
wait until all are inside DATA, then end their messages at the same moment; printed is the
histogram of final replies and how many messages smtp-sink's side of the gateway delivered.

Measurements are printed, never asserted. Loopback only; everything started here is stopped.
Environment: BENCH_QUICK=1 (a 1-2 minute smoke), BENCH_ROUNDS, BENCH_SIGNATURES (1000),
BENCH_CLIENTS (4: concurrent senders), BENCH_BURST (200,1000: one burst per number; 0 skips), BENCH_BURST_SIZE (2k|100k|5m, default 100k), BENCH_SIZES (2k,100k,5m),
BENCH_SCRATCH (tmpfs|disk: where libclamav unpacks, default tmpfs under /dev/shm), BENCH_PROXY=0 (skip the
haproxy reference: a byte-forwarding proxy in mode tcp, no SMTP and no scan, in the same rounds, for
what any proxy in front of smtp-sink costs on this machine), BENCH_KEEP=1
(keep the work folder with the gateways' logs), BENCH_AB (see variants()).
Usage: build/bench.py path/to/portcullis
"""
import asyncio
import base64
import collections
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("BENCH_QUICK") == "1"
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))   # concurrent senders, each a new connection per message
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY = os.environ.get("BENCH_PROXY", "1") != "0" and shutil.which("haproxy") is not None

# name -> (label, attachment bytes or None for a plain 2 KB text message,
#          smtp-source messages per round, timed messages per round, portcullis-scan repetitions)
SIZES = {
    "2k": ("2 KB", None, 3000, 600, 400),
    "100k": ("100 KB attachment", 100 * 1024, 1500, 300, 200),
    "5m": ("5 MB attachment", 5 * 1024 * 1024, 60, 24, 10),
}
QUICK_COUNTS = {"2k": (600, 200, 200), "100k": (300, 100, 100), "5m": (12, 8, 4)}


def env_int(name, default):
    return int(os.environ.get(name, default))


def variants():
    """BENCH_AB="NAME=VALUE ...": a second gateway with that environment beside the plain one, both
    in every round (direct, A, B), so the two compare by ratios from one run. BENCH_AB=scratch=disk
    (or tmpfs) gives B the other scratch folder instead; SECTION.KEY=VALUE (a dot in the name) a
    setting in B's portcullis.ini, e.g. BENCH_AB=limits.stream_threshold=0; binary=PATH another build
    for B (a change against its base, in the same rounds)."""
    ab = os.environ.get("BENCH_AB", "").split()
    if not ab:
        return [("portcullis", {})]
    return [("A", {}), ("B", dict(kv.split("=", 1) for kv in ab))]


VARIANTS = variants()


# ---------------------------------------------------------------- messages

# Every message sent is different, as real mail is: a serial number in the Message-ID and in the
# body, and for an attachment in its first base64 line, so the attachment's bytes (and its hash)
# differ too. libclamav's clean cache is keyed by content; with one fixed file a cache would
# answer every scan after the first (ScanEngine.Load keeps it off, docs/PERFORMANCE.md).
SERIAL = b"0000000000000000"   # 16 base64-alphabet characters, replaced per message


def message_text(name):
    """The message with LF line ends and SERIAL where each message gets its number."""
    label, attachment, *_ = SIZES[name]
    serial = SERIAL.decode()
    head = (f"From: <bench@client.test>\nTo: <sink@dest.test>\nSubject: bench {label}\n"
            f"Message-ID: <bench-{name}-{serial}@client.test>\nMIME-Version: 1.0\n")
    if attachment is None:
        body = f"Content-Type: text/plain; charset=us-ascii\n\nReference {serial}.\n"
        line = "The quick brown fox jumps over the lazy dog, and the report follows below.\n"
        text = head + body
        while len(text) + len(line) <= 2048:
            text += line
        return text
    rng = random.Random(20240501 + attachment)
    payload = base64.encodebytes(rng.randbytes(attachment)).decode("ascii")
    payload = serial + payload[len(serial):]
    return (head + 'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
            "Content-Type: text/plain; charset=us-ascii\n\nThe report is attached.\n\n--b1\n"
            'Content-Type: application/octet-stream; name="report.bin"\n'
            'Content-Disposition: attachment; filename="report.bin"\n'
            "Content-Transfer-Encoding: base64\n\n" + payload + "--b1--\n")


def crlf(text):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def wire_body(text):
    """CRLF line ends, dot-stuffed, with the end-of-data line."""
    return ("".join(("." + l if l.startswith(".") else l) + "\r\n" for l in crlf(text)) + ".\r\n").encode("ascii")


class Messages:
    """The wire form of one size, cut at its serial numbers: message(n) is message number n."""

    def __init__(self, name):
        self.pieces = wire_body(message_text(name)).split(SERIAL)
        self.file_pieces = "".join(l + "\r\n" for l in crlf(message_text(name))).encode("ascii").split(SERIAL)

    def message(self, n):
        return (b"%016d" % n).join(self.pieces)

    def file_content(self, n):
        """The message as the gateway scans it (CRLF, not dot-stuffed, no end-of-data line)."""
        return (b"%016d" % n).join(self.file_pieces)


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before opening port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # readiness poll of a process started here, bounded
    raise SystemExit(f"{what} never opened port {port}")


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime (fields 14, 15)


class TcpProxy:
    """haproxy in mode tcp in front of smtp-sink: the floor for a proxy on this machine (every
    command and reply crosses the loopback twice, as through the gateway, with no parsing or scan)."""

    def __init__(self, work, sink_port):
        self.port = free_port()
        cfg = os.path.join(work, f"haproxy-{self.port}.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 4096
    nbthread {os.cpu_count()}
defaults
    mode tcp
    timeout connect 10s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:{self.port}
    default_backend sink
backend sink
    server sink 127.0.0.1:{sink_port}
""")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "haproxy")

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


class Gateway:
    def __init__(self, binary, work, sink_port, name, scratch, env=None):
        self.binary, self.name = binary, name
        env = dict(env or {})
        settings = {k: env.pop(k) for k in list(env) if "." in k}
        self.port = free_port()
        self.folder = os.path.join(work, name)
        for sub in ("tmp", "queue", "quarantine"):
            os.makedirs(os.path.join(self.folder, sub), exist_ok=True)
        self.ini = os.path.join(self.folder, "portcullis.ini")
        with open(self.ini, "w") as f:
            f.write(f"""[general]
interfaces = 127.0.0.1:{self.port}
hostname = bench.local
smtp_server_address = 127.0.0.1
smtp_server_port = {sink_port}
temp_folder = {self.folder}/tmp
queue_folder = {self.folder}/queue
control_socket = {self.folder}/control.sock
[scan]
database_folder = {work}/db
scratch_folder = {scratch or ''}
[quarantine]
folder = {self.folder}/quarantine
[status]
listen =
""")
            for name, value in settings.items():
                section, key = name.split(".", 1)
                f.write(f"[{section}]\n{key} = {value}\n")
        self.log = open(os.path.join(self.folder, "out.log"), "w+")
        self.err = open(os.path.join(self.folder, "err.log"), "w+")
        self.proc = subprocess.Popen([binary, "run", "--config", self.ini], stdout=self.log, stderr=self.err,
                                     env=dict(os.environ, PORTCULLIS_GC_REPORT="1", **(env or {})))
        wait_port(self.port, self.proc, f"gateway {name}")
        self.start_rss = proc_status(self.proc.pid, "VmRSS")

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def peak_rss(self):
        return proc_status(self.proc.pid, "VmHWM")

    def rss(self):
        return proc_status(self.proc.pid, "VmRSS")

    def delivered(self):
        self.log.flush()
        with open(self.log.name) as f:
            return sum(1 for line in f if "action=delivered" in line)

    def stop(self):
        """SIGTERM; returns the managed bytes the process allocated in its life."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        allocated = None
        for path in (self.log.name, self.err.name):
            with open(path) as f:
                for line in f:
                    if "gc allocated_bytes=" in line:
                        allocated = int(line.split("gc allocated_bytes=")[1].split()[0])
        return allocated


class Serials:
    """Message numbers, never reused within a run."""
    next = 0

    @classmethod
    def take(cls, count):
        first = cls.next
        cls.next += count
        return first


def _expect(stream, code):
    """Reads one (multi-line) reply; returns its last line, or raises when the code differs."""
    while True:
        line = stream.readline()
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            if int(line[:3]) != code:
                raise ValueError(line.decode("ascii", "replace").strip())
            return line


def _sender(port, msgs, first, count, results):
    """One client process: `count` messages, one connection each, commands one at a time, as
    smtp-source sends them; puts (sent, {refusal: n}) on the results queue."""
    sent, refused = 0, collections.Counter()
    for n in range(first, first + count):
        body = msgs.message(n)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stream = s.makefile("rb")
                _expect(stream, 220)
                for command, code in ((b"EHLO bench.client.test\r\n", 250), (b"MAIL FROM:<bench@client.test>\r\n", 250),
                                      (b"RCPT TO:<sink@dest.test>\r\n", 250), (b"DATA\r\n", 354)):
                    s.sendall(command)
                    _expect(stream, code)
                s.sendall(body)
                _expect(stream, 250)
                sent += 1
                s.sendall(b"QUIT\r\n")
                try:
                    _expect(stream, 221)
                except (OSError, ConnectionError, ValueError):
                    pass
        except (OSError, ConnectionError, ValueError) as e:
            refused[str(e)[:60]] += 1
    results.put((sent, dict(refused)))


def send_load(port, msgs, count):
    """Seconds for CLIENTS processes to send `count` different messages, a new connection each;
    and the refusals. Python's own client instead of smtp-source, which repeats one file."""
    first = Serials.take(count)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    shares = [count // CLIENTS + (1 if i < count % CLIENTS else 0) for i in range(CLIENTS)]
    starts = [first + sum(shares[:i]) for i in range(CLIENTS)]
    workers = [context.Process(target=_sender, args=(port, msgs, starts[i], shares[i], results)) for i in range(CLIENTS)]
    start = time.monotonic()
    for w in workers:
        w.start()
    outcomes = [results.get() for _ in workers]
    seconds = time.monotonic() - start
    for w in workers:
        w.join()
    refused = collections.Counter()
    for _, r in outcomes:
        refused.update(r)
    if refused:
        print(f"  sending to port {port}: {dict(refused)}")
    return seconds, refused


def scan_cpu(binary, ini, files, tiny):
    """libclamav's CPU seconds for one scan: `portcullis scan` of N different messages of the size
    (as the gateway gets them) minus N scans of a tiny file, ÷ N."""
    def run(paths):
        # wait4 gives this child's own CPU (RUSAGE_CHILDREN would mix in the gateways). Its
        # ru_maxrss is no use: Linux keeps the high-water mark of the forked copy of this script.
        proc = subprocess.Popen([binary, "scan", "--config", ini] + paths, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        return usage.ru_utime + usage.ru_stime
    return max(run(files) - run([tiny] * len(files)), 0.0) / len(files)


# ---------------------------------------------------------------- SMTP clients

async def read_reply(reader):
    text = b""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        text += line
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode("ascii", "replace").strip()


async def open_transaction(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for command, expected in ((None, 220), (b"EHLO bench.client.test\r\n", 250),
                              (b"MAIL FROM:<bench@client.test>\r\n", 250),
                              (b"RCPT TO:<sink@dest.test>\r\n", 250), (b"DATA\r\n", 354)):
        if command:
            writer.write(command)
            await writer.drain()
        code, line = await read_reply(reader)
        if code != expected:
            writer.close()
            return None, None, line
    return reader, writer, None


async def end_transaction(reader, writer, body):
    writer.write(body)
    await writer.drain()
    code, line = await read_reply(reader)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    try:
        await asyncio.wait_for(read_reply(reader), 10)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    writer.close()
    return line


async def timed_messages(port, msgs, count):
    """Latencies in seconds, connect to final reply, CLIENTS at a time; and refusals."""
    latencies, refused = [], collections.Counter()
    first = Serials.take(count)
    todo = iter(range(first, first + count))

    async def client():
        for n in todo:
            body = msgs.message(n)
            start = time.perf_counter()
            try:
                reader, writer, refusal = await open_transaction(port)
                final = refusal or await end_transaction(reader, writer, body)
            except (OSError, ConnectionError) as e:
                final = f"error {e!r}"
            if final.startswith("250"):
                latencies.append(time.perf_counter() - start)
            else:
                refused[final[:60]] += 1
    await asyncio.gather(*[client() for _ in range(CLIENTS)])
    return latencies, refused


async def burst(port, msgs, clients):
    """All clients inside DATA, then every message ends at once; final replies counted."""
    everyone_in_data = asyncio.Event()
    ready = 0
    replies = collections.Counter()
    serials = iter(range(Serials.take(clients), Serials.next))

    async def client():
        nonlocal ready
        body = msgs.message(next(serials))
        try:
            reader, writer, refusal = await open_transaction(port)
        except (OSError, ConnectionError) as e:
            refusal = f"connect error {e!r}"
        ready += 1
        if ready == clients:
            everyone_in_data.set()
        if refusal:
            replies[refusal[:70]] += 1
            return
        await everyone_in_data.wait()
        try:
            line = await asyncio.wait_for(end_transaction(reader, writer, body), 300)
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            line = f"error {e!r}"
        # 2xx by code; anything else with its text, which says why.
        replies[" ".join(line.split()[:2]) if line.startswith("2") else line[:100]] += 1
    start = time.monotonic()
    await asyncio.gather(*[client() for _ in range(clients)])
    return replies, time.monotonic() - start


# ---------------------------------------------------------------- report

def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: build/bench.py path/to/portcullis")
    binary = os.path.realpath(sys.argv[1])
    rounds = env_int("BENCH_ROUNDS", 2 if QUICK else 3)
    sizes = [s for s in os.environ.get("BENCH_SIZES", "2k,100k,5m").split(",") if s]
    bursts = [int(n) for n in os.environ.get("BENCH_BURST", "200,1000").split(",") if n and int(n) > 0]
    burst_size = os.environ.get("BENCH_BURST_SIZE", "100k")
    signatures = env_int("BENCH_SIGNATURES", 1000)
    for s in sizes + [burst_size]:
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r}: one of {', '.join(SIZES)}")

    work = tempfile.mkdtemp(prefix="portcullis-bench-")
    os.chmod(work, 0o755)
    tmpfs = tempfile.mkdtemp(prefix="portcullis-bench-scratch-", dir="/dev/shm")
    scratch = tmpfs if os.environ.get("BENCH_SCRATCH", "tmpfs") == "tmpfs" else None
    procs = []
    try:
        os.makedirs(f"{work}/db")
        subprocess.run([sys.executable, f"{ROOT}/build/gen-signatures.py", f"{work}/db/bench.hdb", str(signatures)], check=True)
        msgs = {s: Messages(s) for s in set(sizes + [burst_size])}
        tiny = f"{work}/tiny.txt"
        with open(tiny, "w") as f:
            f.write("tiny\n")

        sink_port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        wait_port(sink_port, sink, "smtp-sink")

        started = time.monotonic()
        print(f"portcullis bench: {binary}" + (f"; A/B: B has {os.environ['BENCH_AB']}" if len(VARIANTS) > 1 else ""))
        print(f"  {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; {signatures} signatures; "
              f"{rounds} rounds; {CLIENTS} clients, a new connection per message; scratch {'tmpfs' if scratch else 'temp_folder on disk'}"
              f"{'; QUICK' if QUICK else ''}")

        # What start-up alone allocates and holds, to subtract.
        idle = Gateway(binary, work, sink_port, "idle", scratch)
        procs.append(idle.proc)
        idle_rss = idle.start_rss
        idle_alloc = idle.stop() or 0
        print(f"  idle gateway: RSS after engine load {mib(idle_rss)}, managed bytes allocated by start/stop {idle_alloc:,}")

        rows = []
        for s in sizes:
            label = SIZES[s][0]
            sent, timed, scans = QUICK_COUNTS[s] if QUICK else SIZES[s][2:]
            gws = []
            for v, env in VARIANTS:
                env = dict(env)
                where = {"disk": None, "tmpfs": tmpfs}.get(env.pop("scratch", None), scratch)
                gws.append(Gateway(env.pop("binary", binary), work, sink_port, f"gw-{s}-{v}", where, env))
            procs.extend(g.proc for g in gws)
            proxy = TcpProxy(work, sink_port) if PROXY else None
            if proxy:
                procs.append(proxy.proc)
                send_load(proxy.port, msgs[s], CLIENTS)
            pm = dict(secs=[], ratios=[], cpu=0.0, lat=[], refused=collections.Counter())
            # Warm-up: a few messages each way (first connections, JIT-free but pools and caches).
            send_load(sink_port, msgs[s], CLIENTS)
            for g in gws:
                send_load(g.port, msgs[s], CLIENTS)
            direct_s, lat_direct = [], []
            per = [dict(secs=[], ratios=[], cpu=0.0, lat=[], refused=collections.Counter()) for _ in gws]
            for r in range(rounds):
                d, _ = send_load(sink_port, msgs[s], sent)
                direct_s.append(d)
                line = f"  {label} round {r + 1}: direct {sent / d:7.1f} msg/s"
                # The same load through haproxy (when run) and each gateway, its CPU from /proc.
                targets = ([("haproxy", proxy, pm)] if proxy else []) + [(v, g, m) for (v, _), g, m in zip(VARIANTS, gws, per)]
                for v, target, m in targets:
                    c0 = target.cpu()
                    t, refused = send_load(target.port, msgs[s], sent)
                    c = target.cpu() - c0
                    m["cpu"] += c
                    m["secs"].append(t)
                    m["ratios"].append(d / t)
                    m["refused"] += refused
                    line += f", {v} {sent / t:7.1f} msg/s (ratio {d / t:.2f}, {c / sent * 1e3:.2f} ms CPU/msg)"
                print(line)
                ld, _ = asyncio.run(timed_messages(sink_port, msgs[s], timed))
                lat_direct += ld
                if proxy:
                    pm["lat"] += asyncio.run(timed_messages(proxy.port, msgs[s], timed))[0]
                for g, m in zip(gws, per):
                    lg, rg = asyncio.run(timed_messages(g.port, msgs[s], timed))
                    m["lat"] += lg
                    m["refused"] += rg
            if proxy:
                proxy.stop()
                rows.append(dict(label=f"{label}, haproxy mode tcp (no scan)", proxy=True,
                                 direct=rounds * sent / sum(direct_s), gw=rounds * sent / sum(pm["secs"]),
                                 ratio=sum(direct_s) / sum(pm["secs"]), rmin=min(pm["ratios"]), rmax=max(pm["ratios"]),
                                 ld50=pct(lat_direct, 50), ld99=pct(lat_direct, 99), lg50=pct(pm["lat"], 50), lg99=pct(pm["lat"], 99),
                                 cpu=pm["cpu"] / (rounds * sent)))
            # "After the load": past the quiet second after which the gateway gives memory back
            # (Messages/LargeMessageMemory.cs).
            time.sleep(2)
            for (v, _), g, m in zip(VARIANTS, gws, per):
                peak, settled = g.peak_rss(), g.rss()
                through = CLIENTS + rounds * (sent + timed)
                allocated = g.stop()
                delivered = g.delivered()  # after the stop: the daemon's log writer has flushed
                rows.append(dict(label=label if len(VARIANTS) == 1 else f"{label}, {v}",
                                 direct=rounds * sent / sum(direct_s), gw=rounds * sent / sum(m["secs"]),
                                 ratio=sum(direct_s) / sum(m["secs"]), rmin=min(m["ratios"]), rmax=max(m["ratios"]),
                                 ld50=pct(lat_direct, 50), ld99=pct(lat_direct, 99), lg50=pct(m["lat"], 50), lg99=pct(m["lat"], 99),
                                 cpu=m["cpu"] / (rounds * sent), engine_rss=g.start_rss, peak=peak, settled=settled,
                                 alloc=(allocated - idle_alloc) / through if allocated else None,
                                 delivered=delivered, through=through, refused=m["refused"]))
            # libclamav's own CPU for as many different messages of this size.
            folder = f"{work}/scan-{s}"
            os.makedirs(folder)
            paths = []
            for n in range(scans):
                paths.append(f"{folder}/{n}.eml")
                with open(paths[-1], "wb") as f:
                    f.write(msgs[s].file_content(Serials.take(1)))
            scan = scan_cpu(binary, gws[0].ini, paths, tiny)
            shutil.rmtree(folder, ignore_errors=True)
            for w in rows[-len(VARIANTS):]:
                w["scan"] = scan

        print()
        print("| message | straight to smtp-sink | through portcullis | ratio (min-max) | p50 / p99 ms, direct -> portcullis "
              "| portcullis CPU/msg | libclamav scan CPU/msg | RSS peak / after the load (engine loaded, idle) | managed bytes/msg |")
        print("|---|---|---|---|---|---|---|---|---|")
        for w in rows:
            if w.get("proxy"):
                print(f"| {w['label']} | {w['direct']:,.1f} msg/s | {w['gw']:,.1f} msg/s | {w['ratio']:.2f} ({w['rmin']:.2f}-{w['rmax']:.2f}) "
                      f"| {w['ld50'] * 1e3:.2f} / {w['ld99'] * 1e3:.2f} -> {w['lg50'] * 1e3:.2f} / {w['lg99'] * 1e3:.2f} "
                      f"| {w['cpu'] * 1e3:.2f} ms (haproxy) | - | - | - |")
                continue
            alloc = f"{w['alloc']:,.0f}" if w["alloc"] is not None else "n/a"
            print(f"| {w['label']} | {w['direct']:,.1f} msg/s | {w['gw']:,.1f} msg/s | {w['ratio']:.2f} ({w['rmin']:.2f}-{w['rmax']:.2f}) "
                  f"| {w['ld50'] * 1e3:.2f} / {w['ld99'] * 1e3:.2f} -> {w['lg50'] * 1e3:.2f} / {w['lg99'] * 1e3:.2f} "
                  f"| {w['cpu'] * 1e3:.2f} ms | {w['scan'] * 1e3:.2f} ms | {mib(w['peak'])} / {mib(w['settled'])} ({mib(w['engine_rss'])}) "
                  f"| {alloc} |")
        for w in rows:
            if not w.get("proxy") and (w["delivered"] != w["through"] or w["refused"]):
                print(f"  {w['label']}: gateway delivered {w['delivered']} of {w['through']}; refused: {dict(w['refused'])}")

        for clients in bursts:
            gw = Gateway(binary, work, sink_port, f"burst-{clients}", scratch)
            procs.append(gw.proc)
            replies, seconds = asyncio.run(burst(gw.port, msgs[burst_size], clients))
            peak = gw.peak_rss()
            gw.stop()
            delivered = gw.delivered()  # after the stop: the daemon's log writer has flushed
            print()
            print(f"burst: {clients} simultaneous one-message clients ({SIZES[burst_size][0]}, default settings), "
                  f"{seconds:.1f} s, peak RSS {mib(peak)} (engine loaded, idle: {mib(gw.start_rss)}); gateway delivered {delivered}")
            for reply, n in sorted(replies.items()):
                print(f"  {n:5d}  {reply}")
        print(f"\ntotal {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmpfs, ignore_errors=True)


if __name__ == "__main__":
    main()
