#!/usr/bin/env python3
"""A minimal downstream SMTP server for the arm64 smoke test and the reload bench.

Accepts every envelope and message (RFC 5321 DATA and RFC 3030 BDAT), answers 250 to each,
and on SIGTERM prints "received N" (messages accepted with the final 250). With --out DIR
every message is also written to DIR/N.eml. The listening port goes to --port-file once bound.
"""
import argparse
import asyncio
import os
import signal

received = 0


async def session(reader, writer, out):
    global received
    writer.write(b"220 sink.test ESMTP\r\n")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb == b"EHLO":
            writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n250 CHUNKING\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            body = bytearray()
            while True:
                chunk = await reader.readline()
                if not chunk or chunk == b".\r\n":
                    break
                body += chunk
            received += 1
            if out:
                with open(os.path.join(out, f"{received}.eml"), "wb") as f:
                    f.write(body)
            writer.write(f"250 2.0.0 Ok: queued as SINK{received}\r\n".encode())
        elif verb == b"BDAT":
            parts = line.split()
            body = await reader.readexactly(int(parts[1]))
            if len(parts) > 2:
                received += 1
                if out:
                    with open(os.path.join(out, f"{received}.eml"), "wb") as f:
                        f.write(body)
                writer.write(f"250 2.0.0 Ok: queued as SINK{received}\r\n".encode())
            else:
                writer.write(b"250 2.0.0 chunk\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
        await writer.drain()
    writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--out")
    args = parser.parse_args()
    server = await asyncio.start_server(lambda r, w: session(r, w, args.out), "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(args.port_file + ".tmp", args.port_file)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print(f"received {received}", flush=True)


asyncio.run(main())
