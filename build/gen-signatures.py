#!/usr/bin/env python3
"""Writes COUNT random MD5 hash signatures (ClamAV .hdb: md5:size:name) to FILE, for the reload
bench: a database about the size of a real one in signature count, loadable in seconds.
Usage: build/gen-signatures.py FILE [COUNT]"""
import os
import random
import sys

path = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
rng = random.Random(20240501)
with open(path + ".tmp", "w") as f:
    for i in range(count):
        f.write(f"{rng.getrandbits(128):032x}:{rng.randint(64, 4_000_000)}:Portcullis.Bench.{i}\n")
os.rename(path + ".tmp", path)
