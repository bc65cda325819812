"""py-consul's own conftest, with a `muster agent -dev` where it starts a Consul container.

tests/tests/clients.rs copies this file over the one in py-consul's sdist (upstream/) and
runs the sdist's tests with it. The fixtures keep py-consul's names and shapes, so its tests
run unchanged. Each test gets a fresh agent on ephemeral loopback ports (MUSTER_HTTP_PORT
fixes the HTTP port, for running by hand), with script checks on and, for the ACL fixtures,
ACLs on with a random initial management token. An agent's log goes to MUSTER_SUITE_LOGS
(default: the system temp dir) under the test's name.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

MUSTER = os.environ["MUSTER_BIN"]
LOGS = os.environ.get("MUSTER_SUITE_LOGS") or tempfile.gettempdir()
ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])


def pytest_collection_modifyitems(config, items):
    """Leaves out exactly the tests MUSTER_SUITE_NOT_RUN lists (pytest's --deselect matches
    ID prefixes, which would take test_agent_checks_service_id with test_agent_checks); a
    listed test that no longer exists is an error, so the list cannot go stale."""
    path = os.environ.get("MUSTER_SUITE_NOT_RUN")
    if not path:
        return
    with open(path, encoding="utf-8") as f:
        listed = {l.split()[0] for l in f if l.strip() and not l.startswith("#")}
    unknown = listed - {item.nodeid for item in items}
    if unknown:
        raise pytest.UsageError(f"{path} lists tests the suite does not have: {sorted(unknown)}")
    config.hook.pytest_deselected(items=[i for i in items if i.nodeid in listed])
    items[:] = [i for i in items if i.nodeid not in listed]


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    if "CONSUL_HTTP_TOKEN" in os.environ:
        del os.environ["CONSUL_HTTP_TOKEN"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(acl_master_token: str | None):
    """Starts an agent and waits, as py-consul's conftest does, until it has a leader and
    answers a service registration; returns (process, HTTP port, data dir). A port picked
    free can be taken by another test's agent before ours binds it: then it starts again on
    other ports."""
    for _ in range(5):
        try:
            return start_once(acl_master_token)
        except PortTaken:
            continue
    return start_once(acl_master_token)


class PortTaken(Exception):
    pass


def start_once(acl_master_token: str | None):
    d = tempfile.mkdtemp(prefix="py-consul-suite-")
    cfg: dict = {"enable_script_checks": True}
    if acl_master_token:
        cfg["primary_datacenter"] = "dc1"
        cfg["acl"] = {"enabled": True, "tokens": {"initial_management": acl_master_token}}
    with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    port = int(os.environ.get("MUSTER_HTTP_PORT") or free_port())
    args = [MUSTER, "agent", "-dev", "-node", "py-consul", "-data-dir", os.path.join(d, "data"),
            "-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", str(port),
            "-dns-port", str(free_port()), "-server-port", str(free_port()),
            "-serf-lan-port", str(free_port()), "-config-file", os.path.join(d, "config.json")]
    with open(os.path.join(d, "agent.log"), "w", encoding="utf-8") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1/"
    headers = {"X-Consul-Token": acl_master_token} if acl_master_token else {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(base + "status/leader", timeout=2).json():
                requests.put(base + "agent/service/register", json={"name": "test-service"},
                             headers=headers, timeout=2)
                r = requests.get(base + "health/service/test-service", headers=headers, timeout=2)
                if r.status_code == 200 and r.json():
                    requests.put(base + "agent/service/deregister/test-service",
                                 headers=headers, timeout=2)
                    return proc, port, d
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    with open(os.path.join(d, "agent.log"), encoding="utf-8", errors="replace") as f:
        log = f.read()
    if "Address already in use" in log and not os.environ.get("MUSTER_HTTP_PORT"):
        shutil.rmtree(d, ignore_errors=True)
        raise PortTaken()
    raise RuntimeError(f"muster did not come up; the end of its log:\n{log[-3000:]}")


def setup_and_teardown(request, acl_master_token: str | None = None):
    proc, port, d = start(acl_master_token)
    headers = {"X-Consul-Token": acl_master_token} if acl_master_token else {}
    self_ = requests.get(f"http://127.0.0.1:{port}/v1/agent/self", headers=headers, timeout=10)
    instance = ConsulInstance(proc, port, self_.json()["Config"]["Version"].strip())
    try:
        yield instance if acl_master_token is None else (instance, acl_master_token)
    finally:
        proc.kill()
        proc.wait()
        os.makedirs(LOGS, exist_ok=True)
        shutil.copy(os.path.join(d, "agent.log"), os.path.join(LOGS, f"{request.node.name}.log"))
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def consul_instance(request):
    yield from setup_and_teardown(request)


@pytest.fixture
def acl_consul_instance(request):
    yield from setup_and_teardown(request, uuid.uuid4().hex)


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
