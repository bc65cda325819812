#!/usr/bin/env python3
"""Drives a running Muster agent with py-consul (PyPI), called the way its documentation shows.

Usage: CONSUL_HTTP_ADDR=127.0.0.1:8500 python3 test_client.py
(with py-consul importable; see tests/clients/README.md for the install layout).

Each step prints `ok NAME`, `FAIL NAME: error` or `pending NAME: reason`, then a summary line.
Exit status 0 when every enabled step passed. A step named in PENDING is one that needs a fix
Muster does not have yet: it is skipped (and listed) unless MUSTER_CLIENTS_RUN_PENDING=1,
which runs it like any other step.
"""

import os
import sys
import threading
import time
import traceback
import warnings

import consul

# Steps that need a fix Muster does not have yet, with what is missing. Remove a name once the
# fix is merged; MUSTER_CLIENTS_RUN_PENDING=1 runs them all to see which pass.
PENDING = {
}

STEPS = []


def step(fn):
    STEPS.append(fn)
    return fn


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_for(what, fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def later(delay, fn):
    """Runs fn after delay seconds on a thread, so a blocking query can be waiting for it."""
    t = threading.Timer(delay, fn)
    t.start()
    return t


def blocked(what, index, call, done, change):
    """Starts `change` 0.3 s from now, then runs the blocking `call(index)` -> (index, result)
    in a loop, as Consul's documentation says a client must (a blocking query may return for a
    change that its result does not show), until `done(result)`. Checks that the result came
    because of the change: not at once, and well before the 10 s waits ran out."""
    t = later(0.3, change)
    start = time.monotonic()
    try:
        for _ in range(10):
            index, result = call(index)
            if done(result):
                break
        else:
            raise AssertionError(f"{what}: no wanted result after 10 blocking queries: {result}")
    finally:
        t.join()
    took = time.monotonic() - start
    check(0.2 <= took <= 8.0, f"{what}: blocking query returned after {took:.2f}s")
    return index, result


class Ctx:
    def __init__(self, c):
        self.c = c
        self.node = c.agent.self()["Config"]["NodeName"]
        self.addr = os.environ["CONSUL_HTTP_ADDR"].split("//")[-1]


@step
def session_right_after_leader(ctx):
    # The first thing a lock script does once the agent has a leader.
    sid = ctx.c.session.create(name="py-first")
    check(ctx.c.session.destroy(sid), "destroy the first session")


@step
def kv_put_get_recurse_keys(ctx):
    c = ctx.c
    c.kv.delete("py/kv/", recurse=True)
    check(c.kv.put("py/kv/a", "one") is True, "put py/kv/a")
    check(c.kv.put("py/kv/b/c", b"\x00\xffbinary", flags=42) is True, "put binary with flags")
    check(c.kv.put("py/kv/dir/", None) is True, "put a directory key with no value")
    index, data = c.kv.get("py/kv/a")
    check(int(index) > 0, f"index {index!r}")
    check(data["Key"] == "py/kv/a" and data["Value"] == b"one", f"get py/kv/a: {data}")
    check(data["Flags"] == 0 and data["LockIndex"] == 0, f"flags and lock index: {data}")
    _, data = c.kv.get("py/kv/b/c")
    check(data["Value"] == b"\x00\xffbinary" and data["Flags"] == 42, f"binary: {data}")
    _, data = c.kv.get("py/kv/dir/")
    check(data["Value"] is None, f"directory key value: {data}")
    _, items = c.kv.get("py/kv/", recurse=True)
    check([i["Key"] for i in items] == ["py/kv/a", "py/kv/b/c", "py/kv/dir/"], f"recurse: {items}")
    _, keys = c.kv.get("py/kv/", keys=True)
    check(keys == ["py/kv/a", "py/kv/b/c", "py/kv/dir/"], f"keys: {keys}")
    _, keys = c.kv.get("py/kv/", keys=True, separator="/")
    check(keys == ["py/kv/a", "py/kv/b/", "py/kv/dir/"], f"keys with separator: {keys}")
    index, data = c.kv.get("py/kv/missing")
    check(data is None and int(index) > 0, f"missing key: {index!r} {data!r}")
    _, data = c.kv.get("py/kv/a", consistency="stale")
    check(data["Value"] == b"one", "stale read")
    _, data = c.kv.get("py/kv/a", consistency="consistent")
    check(data["Value"] == b"one", "consistent read")


@step
def kv_cas_and_delete(ctx):
    c = ctx.c
    c.kv.delete("py/cas/", recurse=True)
    check(c.kv.put("py/cas/k", "v1", cas=0) is True, "cas=0 creates a missing key")
    check(c.kv.put("py/cas/k", "v2", cas=0) is False, "cas=0 refuses an existing key")
    _, data = c.kv.get("py/cas/k")
    mi = data["ModifyIndex"]
    check(c.kv.put("py/cas/k", "v2", cas=mi + 1000) is False, "cas with a stale index")
    check(c.kv.put("py/cas/k", "v2", cas=mi) is True, "cas with the current index")
    _, data = c.kv.get("py/cas/k")
    check(data["Value"] == b"v2" and data["ModifyIndex"] > mi, f"after cas: {data}")
    check(c.kv.delete("py/cas/k", cas=mi) is False, "delete with a stale cas")
    check(c.kv.delete("py/cas/k", cas=data["ModifyIndex"]) is True, "delete with cas")
    check(c.kv.get("py/cas/k")[1] is None, "deleted by cas")
    for k in ("py/cas/x/1", "py/cas/x/2", "py/cas/y"):
        c.kv.put(k, "v")
    check(c.kv.delete("py/cas/x/", recurse=True) is True, "delete recurse")
    _, keys = c.kv.get("py/cas/", keys=True)
    check(keys == ["py/cas/y"], f"left after delete recurse: {keys}")
    check(c.kv.delete("py/cas/y") is True, "delete one key")
    check(c.kv.delete("py/cas/never") is True, "deleting a missing key succeeds")


@step
def kv_blocking_query(ctx):
    c = ctx.c
    c.kv.put("py/block", "before")
    index, _ = c.kv.get("py/block")
    # The README's example: poll a key for updates with the index of the last read.
    new_index, data = blocked(
        "kv get",
        index,
        lambda i: c.kv.get("py/block", index=i, wait="10s"),
        lambda d: d["Value"] != b"before",
        lambda: c.kv.put("py/block", "after"),
    )
    check(data["Value"] == b"after", f"woke with {data}")
    check(int(new_index) > int(index), f"index moved from {index} to {new_index}")
    # Nothing changes: the query waits out its wait and returns the same index.
    start = time.monotonic()
    same, _ = c.kv.get("py/block", index=new_index, wait="1s")
    took = time.monotonic() - start
    check(same == new_index and 0.8 <= took <= 4.0, f"idle wait: {same} after {took:.2f}s")
    # A recurse watch on a prefix wakes for a new key under it.
    c.kv.delete("py/blockdir/", recurse=True)
    index, _ = c.kv.get("py/blockdir/", recurse=True)
    _, items = blocked(
        "kv get recurse",
        index,
        lambda i: c.kv.get("py/blockdir/", recurse=True, index=i, wait="10s"),
        lambda items: items,
        lambda: c.kv.put("py/blockdir/new", "x"),
    )
    check([i["Key"] for i in items] == ["py/blockdir/new"], f"prefix watch: {items}")


@step
def service_with_ttl_check(ctx):
    c = ctx.c
    check(
        c.agent.service.register(
            "pyweb",
            service_id="pyweb1",
            address="127.0.0.1",
            port=8080,
            tags=["v1", "primary"],
            meta={"team": "py"},
            check=consul.Check.ttl("30s"),
        ),
        "register pyweb1",
    )
    services = c.agent.services()
    check("pyweb1" in services, f"agent services: {list(services)}")
    s = services["pyweb1"]
    check(s["Service"] == "pyweb" and s["Port"] == 8080 and s["Tags"] == ["v1", "primary"], f"{s}")
    check(s["Meta"] == {"team": "py"}, f"meta: {s}")
    checks = c.agent.checks()
    check(checks["service:pyweb1"]["Status"] == "critical", f"new TTL check: {checks}")
    index, nodes = c.health.service("pyweb", passing=True)
    check(nodes == [], f"critical instance listed as passing: {nodes}")
    # A blocking health query wakes when the TTL check passes.
    _, nodes = blocked(
        "health service",
        index,
        lambda i: c.health.service("pyweb", passing=True, index=i, wait="10s"),
        lambda nodes: nodes,
        lambda: c.agent.check.ttl_pass("service:pyweb1", notes="up"),
    )
    check([n["Service"]["ID"] for n in nodes] == ["pyweb1"], f"passing after ttl_pass: {nodes}")
    check(c.agent.checks()["service:pyweb1"]["Output"] == "up", "ttl_pass notes as output")
    check(c.agent.check.ttl_warn("service:pyweb1"), "ttl_warn")
    check(c.agent.checks()["service:pyweb1"]["Status"] == "warning", "status after ttl_warn")
    check(c.agent.check.ttl_fail("service:pyweb1"), "ttl_fail")
    check(c.agent.checks()["service:pyweb1"]["Status"] == "critical", "status after ttl_fail")
    check(c.agent.check.ttl_pass("service:pyweb1"), "ttl_pass")
    _, entries = c.catalog.service("pyweb")
    check([e["ServiceID"] for e in entries] == ["pyweb1"], f"catalog service: {entries}")
    check(entries[0]["ServicePort"] == 8080, f"catalog port: {entries}")
    _, services = c.catalog.services()
    check(sorted(services.get("pyweb", [])) == ["primary", "v1"], f"catalog services: {services}")
    check(c.agent.service.deregister("pyweb1"), "deregister pyweb1")
    check("pyweb1" not in c.agent.services(), "service gone from the agent")
    check("service:pyweb1" not in c.agent.checks(), "its check went with it")
    wait_for("pyweb gone from the catalog", lambda: c.catalog.service("pyweb")[1] == [])


@step
def health_by_tag(ctx):
    c = ctx.c
    for sid, tags in (("pyapi1", ["v1", "blue"]), ("pyapi2", ["v2", "blue"]), ("pyapi3", ["v1"])):
        c.agent.service.register("pyapi", service_id=sid, port=9000, tags=tags,
                                 check=consul.Check.ttl("30s"))
    for sid in ("pyapi1", "pyapi2"):
        c.agent.check.ttl_pass(f"service:{sid}")

    def ids(**kw):
        return sorted(n["Service"]["ID"] for n in c.health.service("pyapi", **kw)[1])

    # The agent syncs its services and checks to the catalog in the background.
    wait_for("two passing pyapi instances", lambda: len(ids(passing=True)) == 2)

    check(ids() == ["pyapi1", "pyapi2", "pyapi3"], f"all: {ids()}")
    check(ids(passing=True) == ["pyapi1", "pyapi2"], f"passing: {ids(passing=True)}")
    check(ids(tag="v1") == ["pyapi1", "pyapi3"], f"tag v1: {ids(tag='v1')}")
    check(ids(tag="v1", passing=True) == ["pyapi1"], f"tag v1 passing: {ids(tag='v1', passing=True)}")
    check(ids(tag=["v1", "blue"]) == ["pyapi1"], f"tags v1 and blue: {ids(tag=['v1', 'blue'])}")
    check(ids(tag="nope") == [], "unknown tag")
    _, entries = c.catalog.service("pyapi", tag="blue")
    check(sorted(e["ServiceID"] for e in entries) == ["pyapi1", "pyapi2"], f"catalog tag: {entries}")
    _, checks = c.health.checks("pyapi")
    check(len(checks) == 3, f"health checks: {checks}")
    _, critical = c.health.state("critical")
    check([x["CheckID"] for x in critical] == ["service:pyapi3"], f"critical: {critical}")
    for sid in ("pyapi1", "pyapi2", "pyapi3"):
        check(c.agent.service.deregister(sid), f"deregister {sid}")


def job_passes(c, service_id, script_check):
    """Registers a `pyjob` instance with `script_check`, waits for it to pass, deregisters it."""
    check(c.agent.service.register("pyjob", service_id=service_id, check=script_check),
          f"register {service_id}")
    wait_for("script check passing",
             lambda: c.agent.checks().get(f"service:{service_id}", {}).get("Status") == "passing")
    check(c.agent.service.deregister(service_id), f"deregister {service_id}")


@step
def service_with_script_check(ctx):
    job_passes(ctx.c, "pyjob1", consul.Check.script(["/bin/true"], "1s"))


@step
def service_with_tcp_and_http_checks(ctx):
    c = ctx.c
    host, port = ctx.addr.rsplit(":", 1)
    check(c.agent.service.register(
        "pyproxy", service_id="pyproxy1", port=int(port),
        check=consul.Check.tcp(host, int(port), "1s", timeout="1s"),
        extra_checks=[consul.Check.http(f"http://{ctx.addr}/v1/status/leader", "1s")],
    ), "register with a tcp and an http check")

    def statuses():
        return sorted(x["Status"] for x in c.agent.checks().values()
                      if x["ServiceID"] == "pyproxy1")

    wait_for("both checks passing", lambda: statuses() == ["passing", "passing"])
    nodes = wait_for("a passing pyproxy instance in the catalog",
                     lambda: c.health.service("pyproxy", passing=True)[1])
    check(len(nodes) == 1 and len(nodes[0]["Checks"]) == 3, f"instance and checks: {nodes}")
    check(c.agent.service.deregister("pyproxy1"), "deregister pyproxy1")


@step
def script_check_numeric_interval(ctx):
    # A string script is deprecated (it becomes ["sh", "-c", ...]); 10 is 10 ns, which Consul
    # raises to its minimum interval.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        script_check = consul.Check.script("/bin/true", 10)
    job_passes(ctx.c, "pyjob2", script_check)


@step
def check_register_and_deregister(ctx):
    c = ctx.c
    check(c.agent.check.register("py-node-check", check=consul.Check.ttl("30s"),
                                 check_id="py-node-ttl", notes="node level"), "register a check")
    checks = c.agent.checks()
    check(checks["py-node-ttl"]["Name"] == "py-node-check", f"{checks}")
    check(c.agent.check.ttl_pass("py-node-ttl"), "pass it")
    # The agent syncs its checks to the catalog in the background, as Consul's does.
    wait_for("the node check passing in health.node", lambda: any(
        x["CheckID"] == "py-node-ttl" and x["Status"] == "passing"
        for x in c.health.node(ctx.node)[1]))
    check(c.agent.check.deregister("py-node-ttl"), "deregister the check")
    check("py-node-ttl" not in c.agent.checks(), "check gone")


@step
def check_with_service_id(ctx):
    c = ctx.c
    c.agent.service.register("pysvc", service_id="pysvc1", port=1)
    check(c.agent.check.register("pysvc-ttl", check=consul.Check.ttl("30s"),
                                 check_id="pysvc1-ttl", service_id="pysvc1"),
          "register a check for pysvc1")
    check(c.agent.checks()["pysvc1-ttl"]["ServiceID"] == "pysvc1", "check tied to the service")
    check(c.agent.service.deregister("pysvc1"), "deregister pysvc1")
    check("pysvc1-ttl" not in c.agent.checks(), "the service's check went with it")


@step
def enable_tag_override(ctx):
    c = ctx.c
    check(c.agent.service.register("pyovr", service_id="pyovr1", tags=["a"],
                                   enable_tag_override=True), "register with tag override")
    check(c.agent.services()["pyovr1"]["EnableTagOverride"] is True, "EnableTagOverride kept")
    check(c.agent.service.deregister("pyovr1"), "deregister pyovr1")


@step
def session_and_lock(ctx):
    c = ctx.c
    c.kv.delete("py/lock")
    sid = c.session.create(name="py-lock", lock_delay=0, ttl=30)
    other = c.session.create(name="py-other", lock_delay=0)
    _, info = c.session.info(sid)
    check(info["ID"] == sid and info["Name"] == "py-lock" and info["Node"] == ctx.node, f"{info}")
    check(info["Behavior"] == "release" and info["TTL"] == "30s", f"info: {info}")
    _, sessions = c.session.list()
    check({sid, other} <= {s["ID"] for s in sessions}, f"session list: {sessions}")
    _, mine = c.session.node(ctx.node)
    check({sid, other} <= {s["ID"] for s in mine}, f"node sessions: {mine}")
    renewed = c.session.renew(sid)
    check(renewed["ID"] == sid, f"renew: {renewed}")

    check(c.kv.put("py/lock", "holder", acquire=sid) is True, "acquire")
    check(c.kv.put("py/lock", "thief", acquire=other) is False, "second session kept out")
    _, data = c.kv.get("py/lock")
    check(data["Session"] == sid and data["LockIndex"] == 1 and data["Value"] == b"holder",
          f"lock held: {data}")
    check(c.kv.put("py/lock", "holder", release=other) is False, "release by a non-holder")
    check(c.kv.put("py/lock", "holder", release=sid) is True, "release")
    _, data = c.kv.get("py/lock")
    check("Session" not in data, f"released: {data}")
    check(c.kv.put("py/lock", "other", acquire=other) is True, "the other session acquires")
    # Destroying the holder (behavior release) frees the key; lock_delay=0 lets sid retake it.
    check(c.session.destroy(other), "destroy other")
    _, data = c.kv.get("py/lock")
    check("Session" not in data and data["Value"] == b"other", f"after destroy: {data}")
    check(c.kv.put("py/lock", "again", acquire=sid) is True, "reacquire after the holder died")
    check(c.session.destroy(sid), "destroy sid")

    # behavior="delete": the key goes with the session.
    eph = c.session.create(behavior="delete", lock_delay=0)
    check(c.kv.put("py/ephemeral", "x", acquire=eph) is True, "acquire ephemeral")
    check(c.session.destroy(eph), "destroy ephemeral session")
    check(c.kv.get("py/ephemeral")[1] is None, "ephemeral key deleted")
    _, gone = c.session.info(sid)
    check(gone is None, f"destroyed session info: {gone}")
    c.kv.delete("py/lock")


@step
def session_blocking_list(ctx):
    c = ctx.c
    index, before = c.session.list()
    made = []
    _, after = blocked(
        "session list",
        index,
        lambda i: c.session.list(index=i, wait="10s"),
        lambda sessions: len(sessions) > len(before),
        lambda: made.append(c.session.create(name="py-watched")),
    )
    check(made and made[0] in {s["ID"] for s in after}, f"new session listed: {after}")
    check(len(after) == len(before) + 1, f"{len(before)} then {len(after)} sessions")
    c.session.destroy(made[0])


@step
def catalog_and_status(ctx):
    c = ctx.c
    leader = c.status.leader()
    check(leader and ":" in leader, f"leader {leader!r}")
    check(leader in c.status.peers(), f"peers {c.status.peers()}")
    _, nodes = c.catalog.nodes()
    check(ctx.node in [n["Node"] for n in nodes], f"catalog nodes: {nodes}")
    _, node = c.catalog.node(ctx.node)
    check(node["Node"]["Node"] == ctx.node, f"catalog node: {node}")
    check(c.catalog.datacenters() == ["dc1"], f"datacenters {c.catalog.datacenters()}")


@step
def agent_self_and_members(ctx):
    c = ctx.c
    problems = []
    me = c.agent.self()
    missing = [k for k in ("Config", "DebugConfig", "Coord", "Member", "Stats", "Meta")
               if k not in me]
    if missing:
        problems.append(f"agent/self lacks {', '.join(missing)}")
    elif "leader" not in me["Stats"].get("consul", {}):
        problems.append(f"agent/self Stats lacks consul.leader: {sorted(me['Stats'])}")
    members = c.agent.members()
    check([m["Name"] for m in members] == [ctx.node], f"members: {members}")
    check(members[0]["Status"] == 1 and members[0]["Tags"]["role"] == "consul", f"{members}")
    for what, m in (("agent/self Member", me.get("Member", {})), ("members", members[0])):
        lacks = [k for k in ("Name", "Addr", "Port", "Tags", "Status", "ProtocolMin",
                             "ProtocolMax", "ProtocolCur", "DelegateMin", "DelegateMax",
                             "DelegateCur") if k not in m]
        if lacks:
            problems.append(f"{what} lacks {', '.join(lacks)}")
    check(not problems, "; ".join(problems))


def wait_for_own_node(c, node):
    """What a script must do while session_right_after_leader is pending: wait until the
    leader has registered its node and serfHealth passes."""
    def ready():
        try:
            _, checks = c.health.node(node)
        except Exception:  # noqa: BLE001 - still starting
            return False
        return any(x["CheckID"] == "serfHealth" and x["Status"] == "passing" for x in checks or [])

    wait_for(f"node {node} registered with serfHealth passing", ready)


def main():
    run_pending = os.environ.get("MUSTER_CLIENTS_RUN_PENDING") == "1"
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if not addr:
        print("CONSUL_HTTP_ADDR is not set", file=sys.stderr)
        return 2
    c = consul.Consul()
    ctx = Ctx(c)
    print(f"py-consul {getattr(consul, '__version__', '?')} against {addr}, node {ctx.node}")
    failed, passed, pending = [], [], []
    for fn in STEPS:
        name = fn.__name__
        if name in PENDING and not run_pending:
            pending.append(name)
            print(f"pending {name}: {PENDING[name]}")
            if name == "session_right_after_leader":
                wait_for_own_node(c, ctx.node)
            continue
        start = time.monotonic()
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001 - report every step, then fail
            failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
            if name == "session_right_after_leader":
                wait_for_own_node(c, ctx.node)
            continue
        passed.append(name)
        print(f"ok {name} ({time.monotonic() - start:.2f}s)")
    print(f"py-consul steps: {len(passed)} ok, {len(failed)} failing, {len(pending)} pending")
    if failed:
        print("failing steps: " + " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
