// Drives a running Muster agent with the npm `consul` package, called the way its README shows.
//
// Usage: CONSUL_HTTP_ADDR=127.0.0.1:8500 node test_client.js   (after `npm ci` in this folder)
//
// Each step prints `ok NAME`, `FAIL NAME: error` or `pending NAME: reason`, then a summary line.
// Exit status 0 when every enabled step passed. A step named in PENDING needs a fix Muster does
// not have yet: it is skipped (and listed) unless MUSTER_CLIENTS_RUN_PENDING=1, which runs it
// like any other step.

import { createRequire } from "node:module";

import Consul from "consul";

// Steps that need a fix Muster does not have yet, with what is missing. Remove a name once the
// fix is merged; MUSTER_CLIENTS_RUN_PENDING=1 runs them all to see which pass.
const PENDING = {
};

const STEPS = [];
const step = (name, fn) => STEPS.push({ name, fn });

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// A refused CAS or lock answers `false`; papi (the package's HTTP layer) resolves a falsy body as
// undefined, so a refusal is anything but `true`.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const show = (v) => JSON.stringify(v);

async function waitFor(what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Starts `change` 300 ms from now, then runs the blocking `call(index)` in a loop, as Consul's
// documentation says a client must (a blocking query may return for a change its result does
// not show), until `done(result)`; `next(result)` is the index for the next call. Checks that
// the result came because of the change: not at once, and well before the 10 s waits ran out.
async function blocked(what, index, call, next, done, change) {
  const start = Date.now();
  const changed = sleep(300).then(change);
  let result;
  for (let i = 0; ; i += 1) {
    result = await call(index);
    if (done(result)) break;
    if (i === 10) throw new Error(`${what}: no wanted result after 10 blocking queries`);
    index = next(result);
  }
  await changed;
  const took = Date.now() - start;
  check(took >= 200 && took <= 8000, `${what}: blocking query returned after ${took} ms`);
  return result;
}

// Resolves with the data of the first `change` event, after `change` ran, for which
// `done(data)` holds. The watch (the README's consul.watch) emits its initial state first; like
// any blocking-query client it may also see changes its result does not show.
function watchChange(consul, method, options, change, done) {
  return new Promise((resolve, reject) => {
    const watch = consul.watch({ method, options, maxAttempts: 3 });
    let events = 0;
    let changed;
    const timer = setTimeout(() => {
      watch.end();
      reject(new Error(`watch saw ${events} change events in 10 s, none wanted`));
    }, 10000);
    watch.on("change", (data) => {
      events += 1;
      if (events === 1) {
        changed = Promise.resolve(change());
        changed.catch(reject);
        return;
      }
      changed.then(() => {
        if (!done(data)) return;
        clearTimeout(timer);
        watch.end();
        resolve(data);
      }, reject);
    });
    watch.on("error", (err) => {
      clearTimeout(timer);
      watch.end();
      reject(err);
    });
  });
}

step("session_right_after_leader", async ({ consul }) => {
  const session = await consul.session.create({ name: "js-first" });
  await consul.session.destroy(session.ID);
});

step("kv_set_get_recurse_keys", async ({ consul }) => {
  await consul.kv.del({ key: "js/kv/", recurse: true });
  check((await consul.kv.set("js/kv/a", "one")) === true, "set js/kv/a");
  check((await consul.kv.set({ key: "js/kv/b/c", value: "two", flags: 42 })) === true, "set flags");
  const a = await consul.kv.get("js/kv/a");
  check(a.Key === "js/kv/a" && a.Value === "one" && a.Flags === 0, `get: ${show(a)}`);
  check(a.CreateIndex > 0 && a.ModifyIndex >= a.CreateIndex, `indexes: ${show(a)}`);
  const bc = await consul.kv.get({ key: "js/kv/b/c", buffer: true });
  check(Buffer.isBuffer(bc.Value) && bc.Value.toString() === "two" && bc.Flags === 42, show(bc));
  check((await consul.kv.get({ key: "js/kv/b/c", raw: true })).toString() === "two", "raw get");
  const all = await consul.kv.get({ key: "js/kv/", recurse: true });
  check(show(all.map((e) => e.Key)) === show(["js/kv/a", "js/kv/b/c"]), `recurse: ${show(all)}`);
  const keys = await consul.kv.keys("js/kv/");
  check(show(keys) === show(["js/kv/a", "js/kv/b/c"]), `keys: ${show(keys)}`);
  const top = await consul.kv.keys({ key: "js/kv/", separator: "/" });
  check(show(top) === show(["js/kv/a", "js/kv/b/"]), `keys with separator: ${show(top)}`);
  check((await consul.kv.get("js/kv/missing")) === undefined, "missing key is undefined");
  check((await consul.kv.get({ key: "js/kv/a", stale: true })).Value === "one", "stale read");
  check((await consul.kv.get({ key: "js/kv/a", consistent: true })).Value === "one", "consistent");
});

step("kv_cas_and_delete", async ({ consul }) => {
  await consul.kv.del({ key: "js/cas/", recurse: true });
  check((await consul.kv.set({ key: "js/cas/k", value: "v1", cas: 0 })) === true, "cas=0 creates");
  check((await consul.kv.set({ key: "js/cas/k", value: "v2", cas: 0 })) !== true, "cas=0 exists");
  const { ModifyIndex: mi } = await consul.kv.get("js/cas/k");
  check((await consul.kv.set({ key: "js/cas/k", value: "v2", cas: mi + 1000 })) !== true, "stale");
  check((await consul.kv.set({ key: "js/cas/k", value: "v2", cas: mi })) === true, "cas current");
  const now = await consul.kv.get("js/cas/k");
  check(now.Value === "v2" && now.ModifyIndex > mi, `after cas: ${show(now)}`);
  check((await consul.kv.del({ key: "js/cas/k", cas: mi })) !== true, "delete with stale cas");
  check((await consul.kv.del({ key: "js/cas/k", cas: now.ModifyIndex })) === true, "delete cas");
  check((await consul.kv.get("js/cas/k")) === undefined, "deleted by cas");
  for (const k of ["js/cas/x/1", "js/cas/x/2", "js/cas/y"]) await consul.kv.set(k, "v");
  check((await consul.kv.del({ key: "js/cas/x/", recurse: true })) === true, "delete recurse");
  check(show(await consul.kv.keys("js/cas/")) === show(["js/cas/y"]), "left after recurse");
  check((await consul.kv.del("js/cas/y")) === true, "delete one key");
});

step("kv_blocking_query", async ({ consul }) => {
  await consul.kv.set("js/block", "before");
  const { ModifyIndex: index } = await consul.kv.get("js/block");
  const after = await blocked(
    "kv get",
    index,
    (i) => consul.kv.get({ key: "js/block", index: i, wait: "10s" }),
    (entry) => entry.ModifyIndex,
    (entry) => entry.Value === "after",
    () => consul.kv.set("js/block", "after"),
  );
  check(after.Value === "after" && after.ModifyIndex > index, `woke with ${show(after)}`);
  // The README's consul.watch: an initial change, then one per write.
  const seen = await watchChange(
    consul,
    consul.kv.get,
    { key: "js/block" },
    () => consul.kv.set("js/block", "watched"),
    (entry) => entry.Value !== "after",
  );
  check(seen.Value === "watched", `watch saw ${show(seen)}`);
});

step("service_with_ttl_check", async ({ consul }) => {
  await consul.agent.service.register({
    name: "jsweb",
    id: "jsweb1",
    address: "127.0.0.1",
    port: 8080,
    tags: ["v1", "primary"],
    meta: { team: "js" },
    check: { ttl: "30s", notes: "app heartbeat" },
  });
  const services = await consul.agent.service.list();
  const s = services.jsweb1;
  check(s && s.Service === "jsweb" && s.Port === 8080, `agent services: ${show(services)}`);
  check(show(s.Tags) === show(["v1", "primary"]) && s.Meta.team === "js", show(s));
  const checks = await consul.agent.check.list();
  check(checks["service:jsweb1"].Status === "critical", `new TTL check: ${show(checks)}`);
  check((await consul.health.service({ service: "jsweb", passing: true })).length === 0,
    "critical instance listed as passing");
  // A watch on the healthy instances sees the TTL pass.
  const healthy = await watchChange(
    consul,
    consul.health.service,
    { service: "jsweb", passing: true },
    () => consul.agent.check.pass({ id: "service:jsweb1", note: "up" }),
    (entries) => entries.length > 0,
  );
  check(show(healthy.map((e) => e.Service.ID)) === show(["jsweb1"]), `healthy: ${show(healthy)}`);
  check((await consul.agent.check.list())["service:jsweb1"].Output === "up", "pass note");
  await consul.agent.check.warn("service:jsweb1");
  check((await consul.agent.check.list())["service:jsweb1"].Status === "warning", "warn");
  await consul.agent.check.fail("service:jsweb1");
  check((await consul.agent.check.list())["service:jsweb1"].Status === "critical", "fail");
  await consul.agent.check.pass("service:jsweb1");
  const nodes = await consul.catalog.service.nodes("jsweb");
  check(nodes.length === 1 && nodes[0].ServicePort === 8080, `catalog nodes: ${show(nodes)}`);
  const list = await consul.catalog.service.list();
  check(show([...list.jsweb].sort()) === show(["primary", "v1"]), `catalog services: ${show(list)}`);
  await consul.agent.service.deregister("jsweb1");
  check(!("jsweb1" in (await consul.agent.service.list())), "service gone from the agent");
  check(!("service:jsweb1" in (await consul.agent.check.list())), "its check went with it");
  await waitFor("jsweb gone from the catalog", async () =>
    (await consul.catalog.service.nodes("jsweb")).length === 0);
});

step("health_by_tag", async ({ consul }) => {
  const instances = { jsapi1: ["v1", "blue"], jsapi2: ["v2", "blue"], jsapi3: ["v1"] };
  for (const [id, tags] of Object.entries(instances)) {
    await consul.agent.service.register({ name: "jsapi", id, port: 9000, tags, check: { ttl: "30s" } });
  }
  await consul.agent.check.pass("service:jsapi1");
  await consul.agent.check.pass("service:jsapi2");
  const ids = async (opts) =>
    (await consul.health.service({ service: "jsapi", ...opts })).map((e) => e.Service.ID).sort();
  // The agent syncs its services and checks to the catalog in the background.
  await waitFor("two passing jsapi instances", async () => (await ids({ passing: true })).length === 2);
  check(show(await ids({})) === show(["jsapi1", "jsapi2", "jsapi3"]), "all instances");
  check(show(await ids({ tag: "v1" })) === show(["jsapi1", "jsapi3"]), "tag v1");
  check(show(await ids({ tag: "v1", passing: true })) === show(["jsapi1"]), "tag v1 passing");
  check(show(await ids({ tag: "blue", passing: true })) === show(["jsapi1", "jsapi2"]), "blue");
  check((await ids({ tag: "nope" })).length === 0, "unknown tag");
  const blue = await consul.catalog.service.nodes({ service: "jsapi", tag: "blue" });
  check(show(blue.map((e) => e.ServiceID).sort()) === show(["jsapi1", "jsapi2"]), "catalog tag");
  check((await consul.health.checks("jsapi")).length === 3, "health checks");
  const critical = await consul.health.state("critical");
  check(show(critical.map((c) => c.CheckID)) === show(["service:jsapi3"]), show(critical));
  for (const id of Object.keys(instances)) await consul.agent.service.deregister(id);
});

step("service_with_script_check", async ({ consul }) => {
  await consul.agent.service.register({
    name: "jsjob",
    id: "jsjob1",
    check: { args: ["/bin/true"], interval: "1s", timeout: "5s" },
  });
  await waitFor("script check passing", async () =>
    (await consul.agent.check.list())["service:jsjob1"]?.Status === "passing");
  await consul.agent.service.deregister("jsjob1");
});

step("check_with_service_id", async ({ consul, node }) => {
  await consul.agent.service.register({ name: "jssvc", id: "jssvc1", port: 1 });
  await consul.agent.check.register({
    name: "jssvc-ttl",
    id: "jssvc1-ttl",
    serviceid: "jssvc1",
    ttl: "30s",
    notes: "tied to jssvc1",
  });
  check((await consul.agent.check.list())["jssvc1-ttl"].ServiceID === "jssvc1", "check's service");
  await consul.agent.check.pass("jssvc1-ttl");
  await waitFor("the check passing in health.node", async () =>
    (await consul.health.node(node)).some((c) => c.CheckID === "jssvc1-ttl" && c.Status === "passing"));
  await consul.agent.check.deregister("jssvc1-ttl");
  check(!("jssvc1-ttl" in (await consul.agent.check.list())), "check deregistered");
  await consul.agent.service.deregister("jssvc1");
});

step("session_and_lock", async ({ consul, node }) => {
  await consul.kv.del("js/lock");
  const { ID: sid } = await consul.session.create({ name: "js-lock", lockdelay: "0s", ttl: "30s" });
  const { ID: other } = await consul.session.create({ name: "js-other", lockdelay: "0s" });
  const info = await consul.session.get(sid);
  check(info.ID === sid && info.Name === "js-lock" && info.Node === node, `info: ${show(info)}`);
  check(info.Behavior === "release" && info.TTL === "30s", `info: ${show(info)}`);
  const listed = (await consul.session.list()).map((s) => s.ID);
  check(listed.includes(sid) && listed.includes(other), `list: ${show(listed)}`);
  const mine = (await consul.session.node(node)).map((s) => s.ID);
  check(mine.includes(sid) && mine.includes(other), `node sessions: ${show(mine)}`);
  const renewed = await consul.session.renew(sid);
  check(renewed[0].ID === sid, `renew: ${show(renewed)}`);

  check((await consul.kv.set({ key: "js/lock", value: "holder", acquire: sid })) === true, "acquire");
  check((await consul.kv.set({ key: "js/lock", value: "x", acquire: other })) !== true, "kept out");
  const held = await consul.kv.get("js/lock");
  check(held.Session === sid && held.LockIndex === 1, `held: ${show(held)}`);
  check((await consul.kv.set({ key: "js/lock", value: "y", release: other })) !== true, "not holder");
  check((await consul.kv.set({ key: "js/lock", value: "done", release: sid })) === true, "release");
  check(!("Session" in (await consul.kv.get("js/lock"))), "released");
  check((await consul.kv.set({ key: "js/lock", value: "o", acquire: other })) === true, "other takes");
  await consul.session.destroy(other);
  const after = await consul.kv.get("js/lock");
  check(!("Session" in after) && after.Value === "o", `after destroy: ${show(after)}`);
  await consul.session.destroy(sid);

  const { ID: eph } = await consul.session.create({ behavior: "delete", lockdelay: "0s" });
  check((await consul.kv.set({ key: "js/ephemeral", value: "x", acquire: eph })) === true, "eph");
  await consul.session.destroy(eph);
  check((await consul.kv.get("js/ephemeral")) === undefined, "ephemeral key deleted");
  check((await consul.session.get(sid)) === undefined, "destroyed session is undefined");
  await consul.kv.del("js/lock");
});

step("session_blocking_list", async ({ consul }) => {
  let made;
  const sessions = await watchChange(
    consul,
    consul.session.list,
    {},
    async () => {
      made = (await consul.session.create({ name: "js-watched" })).ID;
    },
    (list) => list.some((s) => s.ID === made),
  );
  check(sessions.some((s) => s.ID === made), `watched list: ${show(sessions)}`);
  await consul.session.destroy(made);
});

step("catalog_and_status", async ({ consul, node }) => {
  const leader = await consul.status.leader();
  check(typeof leader === "string" && leader.includes(":"), `leader ${show(leader)}`);
  check((await consul.status.peers()).includes(leader), "peers include the leader");
  check((await consul.catalog.node.list()).some((n) => n.Node === node), "catalog nodes");
  const services = await consul.catalog.node.services(node);
  check(services.Node.Node === node, `node services: ${show(services)}`);
  check(show(await consul.catalog.datacenters()) === show(["dc1"]), "datacenters");
});

step("agent_self_and_members", async ({ consul, node }) => {
  const problems = [];
  const me = await consul.agent.self();
  const missing = ["Config", "DebugConfig", "Coord", "Member", "Stats", "Meta"].filter(
    (k) => !(k in me),
  );
  if (missing.length) problems.push(`agent/self lacks ${missing.join(", ")}`);
  const members = await consul.agent.members();
  check(show(members.map((m) => m.Name)) === show([node]), `members: ${show(members)}`);
  for (const [what, m] of [["agent/self Member", me.Member || {}], ["members", members[0]]]) {
    const lacks = ["Name", "Addr", "Port", "Tags", "Status", "ProtocolMin", "ProtocolMax",
      "ProtocolCur", "DelegateMin", "DelegateMax", "DelegateCur"].filter((k) => !(k in m));
    if (lacks.length) problems.push(`${what} lacks ${lacks.join(", ")}`);
  }
  check(problems.length === 0, problems.join("; "));
});

// What a script must do while session_right_after_leader is pending: wait until the leader has
// registered its node and serfHealth passes.
async function waitForOwnNode(consul, node) {
  await waitFor(`node ${node} registered with serfHealth passing`, async () => {
    try {
      const checks = await consul.health.node(node);
      return checks.some((c) => c.CheckID === "serfHealth" && c.Status === "passing");
    } catch {
      return false;
    }
  });
}

async function main() {
  const addr = process.env.CONSUL_HTTP_ADDR;
  if (!addr) {
    console.error("CONSUL_HTTP_ADDR is not set");
    return 2;
  }
  const url = new URL(addr.includes("//") ? addr : `http://${addr}`);
  const consul = new Consul({ host: url.hostname, port: Number(url.port) });
  const node = (await consul.agent.self()).Config.NodeName;
  const runPending = process.env.MUSTER_CLIENTS_RUN_PENDING === "1";
  const version = createRequire(import.meta.url)("consul/package.json").version;
  console.log(`consul (npm) ${version} against ${addr}, node ${node}`);
  const passed = [];
  const failed = [];
  const pending = [];
  for (const { name, fn } of STEPS) {
    if (name in PENDING && !runPending) {
      pending.push(name);
      console.log(`pending ${name}: ${PENDING[name]}`);
      if (name === "session_right_after_leader") await waitForOwnNode(consul, node);
      continue;
    }
    const start = Date.now();
    try {
      await fn({ consul, node });
    } catch (err) {
      failed.push(name);
      console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
      if (name === "session_right_after_leader") await waitForOwnNode(consul, node);
      continue;
    }
    passed.push(name);
    console.log(`ok ${name} (${((Date.now() - start) / 1000).toFixed(2)}s)`);
  }
  console.log(`consul (npm) steps: ${passed.length} ok, ${failed.length} failing, ${pending.length} pending`);
  if (failed.length) console.log(`failing steps: ${failed.join(" ")}`);
  consul.destroy();
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.log(`error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
