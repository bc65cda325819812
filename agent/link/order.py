#!/usr/bin/env python3
"""Prints the functions a `muster` cluster runs while it starts and idles, idle ones first,
one mangled name a line: `agent/link/symbol-order.txt`, for lld's `--symbol-ordering-file`
(see README.md beside this file).

Run as root on Linux with uprobes, against an optimised build:

    cargo build --profile dist --bin muster
    python3 agent/link/order.py target/dist/muster > agent/link/symbol-order.txt

It puts a uprobe on every function of the binary, starts a 3-server cluster with two client
agents and a lone `-dev` agent on 127.0.0.1, lets them settle, and reads the hit counts
twice, IDLE seconds apart: what ran in between is the idle set, what ran only before it the
start-up set. Everything it starts and registers is removed when it ends.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TRACING = "/sys/kernel/tracing"
GROUP = "muster_order"
SETTLE = 15
IDLE = 30


def segments(binary):
    """PT_LOAD segments as (vaddr, offset, filesz), to turn addresses into file offsets."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    segs = []
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))
    return segs


def functions(binary):
    """{address: mangled name} of every function with a size (the first name at an address)."""
    out = subprocess.run(
        ["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True
    )
    funcs = {}
    for line in out.stdout.splitlines():
        f = line.split(" ", 3)
        if len(f) < 4 or f[2] not in "tTwW":
            continue
        addr, size = int(f[0], 16), int(f[1], 16)
        if size and addr not in funcs:
            funcs[addr] = f[3]
    return funcs


def write(path, text):
    with open(os.path.join(TRACING, path), "a") as f:
        f.write(text)


def hits():
    """{probe name: hit count} from uprobe_profile."""
    counts = {}
    with open(os.path.join(TRACING, "uprobe_profile")) as f:
        for line in f:
            p = line.split()
            if len(p) == 3 and p[1].startswith("f"):
                counts[p[1]] = int(p[2])
    return counts


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent(binary, root, name, extra):
    ports = {k: free_port() for k in ("http", "dns", "serf", "server")}
    data = os.path.join(root, name)
    os.makedirs(data)
    args = [binary, "agent", "-node", name, "-data-dir", data, "-bind", "127.0.0.1",
            "-client", "127.0.0.1", "-http-port", str(ports["http"]),
            "-dns-port", str(ports["dns"]), "-serf-lan-port", str(ports["serf"]),
            "-server-port", str(ports["server"]), "-log-level", "warn"] + extra
    log = open(os.path.join(root, name + ".log"), "w")
    return subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL), ports


def alive_members(http):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/agent/members", timeout=2) as r:
            return sum(1 for m in json.load(r) if m.get("Status") == 1)
    except OSError:
        return 0


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.realpath(sys.argv[1])
    if not os.path.exists(os.path.join(TRACING, "uprobe_events")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True)
    segs = segments(binary)
    funcs = functions(binary)
    names = {}
    # One write a line: the kernel parses each write on its own.
    events = os.open(os.path.join(TRACING, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
    for addr, name in funcs.items():
        seg = next(((v, o) for v, o, n in segs if v <= addr < v + n), None)
        if seg is None:
            continue
        probe = f"f{addr:x}"
        try:
            os.write(events, f"p:{GROUP}/{probe} {binary}:0x{addr - seg[0] + seg[1]:x}\n".encode())
            names[probe] = name
        except OSError:
            pass
    print(f"order.py: {len(names)} probes registered", file=sys.stderr)
    procs = []
    tracing_on = open(os.path.join(TRACING, "tracing_on")).read().strip()
    try:
        # Count hits without filling the trace buffer.
        write("tracing_on", "0")
        write(f"events/{GROUP}/enable", "1")
        print("order.py: probes enabled; starting the agents", file=sys.stderr)
        root = tempfile.mkdtemp(prefix="muster-order-")
        first, p0 = agent(binary, root, "s0", ["-server", "-bootstrap-expect", "3"])
        procs.append(first)
        join = ["-retry-join", f"127.0.0.1:{p0['serf']}"]
        https = [p0["http"]]
        for name in ("s1", "s2"):
            p, ports = agent(binary, root, name, ["-server", "-bootstrap-expect", "3"] + join)
            procs.append(p)
            https.append(ports["http"])
        for name in ("c0", "c1"):
            p, ports = agent(binary, root, name, join)
            procs.append(p)
            https.append(ports["http"])
        procs.append(agent(binary, root, "dev", ["-dev"])[0])
        deadline = time.time() + 120
        while any(alive_members(h) < 5 for h in https):
            if time.time() > deadline:
                sys.exit("order.py: the cluster did not form within 120 s; logs in " + root)
            time.sleep(0.5)
        print("order.py: cluster formed", file=sys.stderr)
        time.sleep(SETTLE)
        before = hits()
        time.sleep(IDLE)
        after = hits()
        for p in procs:
            p.kill()
            p.wait()
        procs = []
        idle = [p for p in names if after.get(p, 0) > before.get(p, 0)]
        start = [p for p in names if before.get(p, 0) > 0 and after.get(p, 0) == before.get(p, 0)]
        sys.stdout.write("".join(names[probe] + "\n" for probe in idle + start))
        sys.stdout.flush()
        print(f"order.py: {len(idle)} idle and {len(start)} start-up functions of "
              f"{len(names)}", file=sys.stderr)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        write(f"events/{GROUP}/enable", "0")
        write("tracing_on", tracing_on)
        try:
            # The whole group in one go (Linux 5.17 and later), else one by one.
            os.write(events, f"-:{GROUP}/\n".encode())
        except OSError:
            for probe in names:
                os.write(events, f"-:{GROUP}/{probe}\n".encode())
        os.close(events)


if __name__ == "__main__":
    main()
