#!/usr/bin/env python3
"""Load driver of build/bench-reload.sh: WORKERS SMTP sessions, each sending ~5 KB messages one
after the other on one connection (RSET-free: every transaction ends with the final reply) for
SECONDS. Prints one line per message: start_time latency_seconds reply_code."""
import smtplib
import sys
import threading
import time

port, seconds, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
body = ("Subject: reload bench\r\nFrom: <bench@example.org>\r\nTo: <sink@example.net>\r\n\r\n"
        + ("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n" * 70))
results = []
lock = threading.Lock()
deadline = time.time() + seconds


def worker():
    client = None
    mine = []
    while time.time() < deadline:
        start = time.time()
        code = 0
        try:
            if client is None:
                client = smtplib.SMTP("127.0.0.1", port, timeout=60)
                client.ehlo("bench.test")
            code = 250
            client.sendmail("bench@example.org", ["sink@example.net"], body)
        except smtplib.SMTPResponseException as e:
            code = e.smtp_code
        except smtplib.SMTPRecipientsRefused as e:
            code = list(e.recipients.values())[0][0]
        except (smtplib.SMTPException, OSError):
            code = -1
            client = None
        mine.append((start, time.time() - start, code))
        if code != 250 and client is not None:
            try:
                client.rset()
            except (smtplib.SMTPException, OSError):
                client = None
    if client is not None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
    with lock:
        results.extend(mine)


threads = [threading.Thread(target=worker) for _ in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for start, latency, code in sorted(results):
    print(f"{start:.6f} {latency:.6f} {code}")
