#!/usr/bin/env python3
"""Drives a Muster agent with ACLs on (default deny, never bootstrapped) through py-consul's ACL
API, called as its documentation shows: bootstrap, policies, tokens, roles, and what a limited
token may and may not do.

Usage: CONSUL_HTTP_ADDR=127.0.0.1:8500 python3 test_acl.py   (py-consul importable)

Prints `ok NAME` or `FAIL NAME: error` per step and a summary; exit status 0 when all passed.
The steps depend on each other (the bootstrap token is used by the rest), so they run in order.
"""

import os
import sys
import time
import traceback

import consul

STEPS = []


def step(fn):
    STEPS.append(fn)
    return fn


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Ctx:
    def __init__(self):
        self.anon = consul.Consul()
        self.root = None  # a client presenting the bootstrap token
        self.secret = None
        self.policy = None
        self.token = None
        self.role = None


@step
def bootstrap_once(ctx):
    t = ctx.anon.acl.bootstrap()
    check(t["Policies"][0]["Name"] == "global-management", t)
    check(t["Description"] == "Bootstrap Token (Global Management)", t)
    ctx.secret = t["SecretID"]
    ctx.root = consul.Consul(token=ctx.secret)
    try:
        ctx.anon.acl.bootstrap()
    except consul.ACLPermissionDenied:
        pass
    else:
        raise AssertionError("a second bootstrap was allowed")


@step
def token_self(ctx):
    me = ctx.root.acl.token.read_self()
    check(me["SecretID"] == ctx.secret, me)
    check(me["Policies"][0]["ID"] == "00000000-0000-0000-0000-000000000001", me)


@step
def policy_crud(ctx):
    # py-consul sends `rules` as JSON (it json.dumps them): Consul's JSON rule form.
    app = {"key_prefix": {"app/": {"policy": "write"}}}
    p = ctx.root.acl.policy.create(name="app", description="app keys", rules=app)
    check(p["Name"] == "app" and "ID" in p and "app/" in p["Rules"], p)
    ctx.policy = p
    got = ctx.root.acl.policy.read(p["ID"])
    check(got["Description"] == "app keys", got)
    both = {"key_prefix": {"app/": {"policy": "write"}, "cfg/": {"policy": "read"}}}
    up = ctx.root.acl.policy.update(p["ID"], "app", description="app and cfg", rules=both)
    check(up["Description"] == "app and cfg" and "cfg/" in up["Rules"], up)
    names = [x["Name"] for x in ctx.root.acl.policy.list()]
    check("app" in names and "global-management" in names, names)
    tmp = ctx.root.acl.policy.create(name="tmp", rules={"node_prefix": {"": {"policy": "read"}}})
    check(ctx.root.acl.policy.delete(tmp["ID"]) is True, "delete answered false")
    names = [x["Name"] for x in ctx.root.acl.policy.list()]
    check("tmp" not in names, names)


@step
def token_crud(ctx):
    t = ctx.root.acl.token.create(description="app", policies_name=["app"])
    check(t["Description"] == "app" and t["Policies"][0]["Name"] == "app", t)
    check(len(t["AccessorID"]) == 36 and len(t["SecretID"]) == 36, t)
    ctx.token = t
    got = ctx.root.acl.token.read(t["AccessorID"])
    check(got["SecretID"] == t["SecretID"], got)
    up = ctx.root.acl.token.update(t["AccessorID"], description="app v2", policies_name=["app"])
    check(up["Description"] == "app v2" and up["SecretID"] == t["SecretID"], up)
    listed = [x["AccessorID"] for x in ctx.root.acl.token.list()]
    check(t["AccessorID"] in listed, listed)
    by_policy = [x["AccessorID"] for x in ctx.root.acl.token.list(policy=ctx.policy["ID"])]
    check(by_policy == [t["AccessorID"]], by_policy)
    c = ctx.root.acl.token.clone(t["AccessorID"], description="clone")
    check(c["AccessorID"] != t["AccessorID"] and c["Description"] == "clone", c)
    check(c["Policies"][0]["Name"] == "app", c)
    check(ctx.root.acl.token.delete(c["AccessorID"]) is True, "delete answered false")
    try:
        ctx.root.acl.token.read(c["AccessorID"])
    except (consul.ACLPermissionDenied, consul.NotFound):
        pass
    else:
        raise AssertionError("a deleted token still reads")


@step
def token_expiry_ttl(ctx):
    t = ctx.root.acl.token.create(policies_name=["app"], expiration_ttl="1h")
    check(t.get("ExpirationTime"), t)
    try:
        ctx.root.acl.token.create(policies_name=["app"], expiration_ttl="10s")
    except consul.ConsulException as e:
        check("cannot be less than 1m0s" in str(e), str(e))
    else:
        raise AssertionError("a 10s token was accepted")
    ctx.root.acl.token.delete(t["AccessorID"])


@step
def role_crud(ctx):
    r = ctx.root.acl.role.create(name="app-role", description="r", policies_name=["app"])
    check(r["Name"] == "app-role" and r["Policies"][0]["Name"] == "app", r)
    ctx.role = r
    check(ctx.root.acl.role.read(r["ID"])["Description"] == "r", "read")
    check(ctx.root.acl.role.read_by_name("app-role")["ID"] == r["ID"], "read by name")
    up = ctx.root.acl.role.update(r["ID"], name="app-role", description="r2", policies_name=["app"])
    check(up["Description"] == "r2", up)
    check("app-role" in [x["Name"] for x in ctx.root.acl.role.list()], "list")
    t = ctx.root.acl.token.create(roles_name=["app-role"], description="via role")
    check(t["Roles"][0]["Name"] == "app-role", t)
    c = consul.Consul(token=t["SecretID"])
    check(c.kv.put("app/role", "v") is True, "write through the role")
    ctx.root.acl.token.delete(t["AccessorID"])
    check(ctx.root.acl.role.delete(r["ID"]) is True, "delete answered false")


@step
def limited_token_is_limited(ctx):
    c = consul.Consul(token=ctx.token["SecretID"])
    check(c.kv.put("app/x", "v") is True, "app/x write")
    try:
        c.kv.put("other/x", "v")
    except consul.ACLPermissionDenied as e:
        check("key:write" in str(e), str(e))
    else:
        raise AssertionError("other/x was writable")
    check(ctx.root.kv.put("other/y", "v") is True, "root write")
    _, entries = c.kv.get("", recurse=True)
    keys = sorted(e["Key"] for e in entries or [])
    check(keys == ["app/role", "app/x"], keys)
    try:
        ctx.anon.kv.get("app/x")
    except consul.ACLPermissionDenied:
        pass
    else:
        raise AssertionError("the anonymous token read app/x")


def main():
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if not addr:
        print("CONSUL_HTTP_ADDR is not set", file=sys.stderr)
        return 2
    ctx = Ctx()
    print(f"py-consul {getattr(consul, '__version__', '?')} ACLs against {addr}")
    failed, passed = [], []
    for fn in STEPS:
        name = fn.__name__
        start = time.monotonic()
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001 - report the step, then stop: later ones need it
            failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
            break
        passed.append(name)
        print(f"ok {name} ({time.monotonic() - start:.2f}s)")
    print(f"py-consul ACL steps: {len(passed)} ok, {len(failed)} failing, 0 pending")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
