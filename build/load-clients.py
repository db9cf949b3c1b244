#!/usr/bin/env python3
"""Client side of `make load` (connections): many concurrent SMTP clients on loopback.

  active   connections that each send --messages messages on one connection and QUIT
  idle     connections that read the banner and say nothing (expect 421 after command_timeout)
  trickle  connections that send one byte a second (slowloris): half in the command phase,
           half inside DATA; they are dropped by us after --trickle-seconds

Prints one key=value summary line per group and exits non-zero if an active client did not get
250 for every message. Loopback only; bounded in count and time.
"""
import argparse
import asyncio
import time

BODY = ("From: <load@client.test>\r\nTo: <sink@dest.test>\r\nSubject: load\r\n\r\n" + "x" * 70 + "\r\n")


async def reply(reader, timeout):
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return None, lines
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), lines


async def command(reader, writer, text, timeout):
    writer.write(text.encode())
    await writer.drain()
    code, _ = await reply(reader, timeout)
    return code


async def active(port, messages, stats, timeout):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if (await reply(reader, timeout))[0] != 220:
            stats["no_banner"] += 1
            return
        await command(reader, writer, "EHLO load.test\r\n", timeout)
        for i in range(messages):
            ok = await command(reader, writer, "MAIL FROM:<load@client.test>\r\n", timeout) == 250
            ok = ok and await command(reader, writer, "RCPT TO:<sink@dest.test>\r\n", timeout) == 250
            ok = ok and await command(reader, writer, "DATA\r\n", timeout) == 354
            if ok:
                code = await command(reader, writer, BODY + ".\r\n", timeout)
                ok = code == 250
            stats["accepted" if ok else "refused"] += 1
            if not ok:
                await command(reader, writer, "RSET\r\n", timeout)
        await command(reader, writer, "QUIT\r\n", timeout)
        writer.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        stats["errors"] += 1
        stats["last_error"] = repr(e)


async def idle(port, stats, limit):
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader, limit)                      # banner
        code, _ = await reply(reader, limit)            # the 421 on timeout, or None on close
        stats[f"got_{code}"] += 1
        stats["seconds_to_close_max"] = max(stats["seconds_to_close_max"], time.monotonic() - start)
        writer.close()
    except asyncio.TimeoutError:
        stats["still_open"] += 1
    except OSError:
        stats["errors"] += 1


async def trickle(port, stats, seconds, in_data):
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader, 30)
        if in_data:
            for line in ("EHLO slow.test\r\n", "MAIL FROM:<slow@client.test>\r\n", "RCPT TO:<sink@dest.test>\r\n", "DATA\r\n"):
                await command(reader, writer, line, 30)
        text = ("x" * 60 + "\r\n") * 100 if in_data else "EHLO slow.test\r\nNOOP\r\n" * 100
        sent = 0
        closed_by_server = None
        for ch in text:
            if time.monotonic() - start > seconds:
                break
            writer.write(ch.encode())
            await writer.drain()
            sent += 1
            try:
                # A server reply or close shows up here; otherwise this is the byte-a-second pace.
                data = await asyncio.wait_for(reader.read(4096), 1.0)
                if not data:
                    closed_by_server = "closed"
                    break
                if data.startswith(b"421") or b"\r\n421" in data:
                    closed_by_server = "421"
                    break
            except asyncio.TimeoutError:
                pass
        key = "data" if in_data else "command"
        if closed_by_server:
            stats[f"{key}_ended_by_server_{closed_by_server}"] += 1
        else:
            stats[f"{key}_still_open_after_{seconds}s"] += 1
        stats[f"{key}_bytes_max"] = max(stats[f"{key}_bytes_max"], sent)
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        stats["errors"] += 1
        stats["last_error"] = repr(e)


def line(name, stats):
    return name + " " + " ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in sorted(stats.items()))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--active", type=int, default=500)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--idle", type=int, default=250)
    p.add_argument("--trickle", type=int, default=250)
    p.add_argument("--trickle-seconds", type=int, default=30)
    p.add_argument("--idle-limit", type=int, default=60)
    a = p.parse_args()

    from collections import defaultdict
    act, idl, tri = defaultdict(int), defaultdict(float), defaultdict(int)
    idl["seconds_to_close_max"] = 0.0
    start = time.monotonic()
    # The slow ones first, so the active clients run while all of them hold connections.
    slow = [asyncio.create_task(idle(a.port, idl, a.idle_limit)) for _ in range(a.idle)]
    slow += [asyncio.create_task(trickle(a.port, tri, a.trickle_seconds, i % 2 == 1)) for i in range(a.trickle)]
    await asyncio.sleep(2)  # pacing of the load, not synchronisation: let the slow ones connect first
    act_start = time.monotonic()
    await asyncio.gather(*[active(a.port, a.messages, act, 60) for _ in range(a.active)])
    act["seconds"] = round(time.monotonic() - act_start, 1)
    act["msg_per_s"] = round(act["accepted"] / max(act["seconds"], 0.001), 1)
    await asyncio.gather(*slow)
    print(line("active", act))
    print(line("idle", idl))
    print(line("trickle", tri))
    print(f"total seconds={time.monotonic() - start:.1f} connections={a.active + a.idle + a.trickle}")
    expected = a.active * a.messages
    return 0 if act["accepted"] == expected and act["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
