// The status page's pure core: from the JSON the gateway serves (/health, /stats,
// /mesh/services, /mesh/peers, /v1/models) to what the page shows. No DOM, no fetch, no
// clock: status.js passes the time in, so each function gives the same answer for the
// same input (tests/integration/test_status_page.py calls them in Chromium).
"use strict";

(function (root) {
  // A node seen before and absent now stays listed as "gone" this long.
  const FORGET_GONE_MS = 10 * 60 * 1000;
  const MAX_EVENTS = 50;

  function hostOf(url) {
    if (!url || url === "local") return null;
    try {
      return new URL(url).host;
    } catch (err) {
      return String(url);
    }
  }

  // What this node's Envoy saw of a peer for one service (/mesh/peers' "forwarding"):
  // a peer it never connected to yet is only "announced" (its record is all we know).
  function forwardingHealth(entry) {
    if (!entry) return "announced";
    if (entry.ejected) return "ejected";
    if (entry.reachable === false) return "unreachable";
    if (entry.reachable === true) return "reachable";
    return "announced";
  }

  function remoteState(services) {
    const states = services.map((s) => s.health);
    if (states.includes("reachable")) return "up";
    if (states.some((s) => s === "unreachable" || s === "ejected")) return "unreachable";
    return "announced";
  }

  function forwardingIndex(peers) {
    const index = new Map();
    for (const entry of (peers && peers.forwarding) || []) {
      index.set(entry.service + "\u0000" + entry.worker_id, entry);
    }
    return index;
  }

  function emptyNode(id) {
    return { id, self: false, state: "announced", address: null, services: [], models: [], gpu: null,
             memory: null, load: null, recordAge: null, lastSeen: null };
  }

  function selfNode(node, health, stats) {
    node.self = true;
    node.state = health ? health.status : "unknown";
    node.address = (health && health.vpn_ip) || (stats && stats.vpn_ip) || null;
    const backends = (stats && stats.backends) || Object.entries((health && health.backends) || {})
      .map(([name, state]) => ({ name, healthy: state === "healthy" }));
    node.services = backends.map((b) => ({ name: b.name, health: b.healthy ? "healthy" : "unhealthy",
                                           error: b.last_error || null }));
    const caps = stats && stats.capabilities;
    if (caps) {
      const gpu = (caps.gpus || [])[0];
      node.gpu = gpu ? { name: gpu.name, total: gpu.memory_total_bytes,
                         used: gpu.memory_total_bytes - gpu.memory_free_bytes,
                         utilization: gpu.utilization_percent, count: caps.gpus.length }
        : (caps.gpu_type ? { name: caps.gpu_type } : null);
      const rss = backends.reduce((sum, b) => sum + (b.rss_bytes || 0), 0);
      node.memory = { ram: caps.ram_bytes || null, backends: rss || null, cores: caps.cpu_cores || null };
    }
  }

  // Every node of the mesh, from what this node knows: itself (/health, /stats), each
  // provider of each service (/mesh/services, with Envoy's view from /mesh/peers) and each
  // model's nodes (/v1/models). `seen` (id -> {node, lastSeen}) is the previous answer's,
  // so that a node whose records expired is shown as gone instead of just disappearing.
  function buildNodes(snap, seen, now) {
    const nodes = new Map();
    const get = (id) => {
      if (!nodes.has(id)) nodes.set(id, emptyNode(id));
      return nodes.get(id);
    };
    const selfId = (snap.health && snap.health.worker_id) || (snap.stats && snap.stats.worker_id) || null;
    if (selfId) selfNode(get(selfId), snap.health, snap.stats);
    const forwarding = forwardingIndex(snap.peers);
    for (const service of (snap.services && snap.services.services) || []) {
      for (const p of service.providers || []) {
        const node = get(p.worker_id);
        if (p.local || p.worker_id === selfId) {
          if (!node.services.some((s) => s.name === service.name)) {
            node.services.push({ name: service.name, health: p.healthy ? "healthy" : "unhealthy", error: null });
          }
          continue;
        }
        node.address = node.address || hostOf(p.url);
        node.gpu = node.gpu || (p.gpu_model ? { name: p.gpu_model } : null);
        const age = Number(p.record_age_seconds);
        node.recordAge = node.recordAge === null ? age : Math.min(node.recordAge, age);
        const entry = forwarding.get(service.name + "\u0000" + p.worker_id);
        node.services.push({ name: service.name, health: forwardingHealth(entry), error: null,
                             requests: entry ? entry.requests : null });
      }
    }
    for (const model of (snap.models && snap.models.data) || []) {
      if (model.alias_of) continue;
      for (const n of model.nodes || []) {
        const node = get(n.worker_id);
        node.models.push({ id: model.id, kind: model.kind, service: n.service, load: n.load_percent });
        node.load = Math.max(node.load === null ? 0 : node.load, n.load_percent || 0);
      }
    }
    for (const node of nodes.values()) {
      if (!node.self) node.state = remoteState(node.services);
      node.lastSeen = now;
      node.services.sort((a, b) => a.name.localeCompare(b.name));
    }
    const nextSeen = new Map();
    for (const node of nodes.values()) nextSeen.set(node.id, { node, lastSeen: now });
    for (const [id, was] of seen || new Map()) {
      if (!nodes.has(id) && now - was.lastSeen < FORGET_GONE_MS) {
        nodes.set(id, { ...was.node, state: "gone", lastSeen: was.lastSeen });
        nextSeen.set(id, was);
      }
    }
    const list = [...nodes.values()].sort((a, b) => (b.self - a.self) || a.id.localeCompare(b.id));
    return { nodes: list, seen: nextSeen };
  }

  // Each service with its providers and their health, in the order /mesh/services gives.
  function buildServices(snap) {
    const forwarding = forwardingIndex(snap.peers);
    return ((snap.services && snap.services.services) || []).map((service) => ({
      name: service.name,
      providers: (service.providers || []).map((p) => {
        const entry = p.local ? null : forwarding.get(service.name + "\u0000" + p.worker_id);
        return { worker: p.worker_id, local: !!p.local, model: p.model || null, address: hostOf(p.url),
                 health: p.local ? (p.healthy ? "healthy" : "unhealthy") : forwardingHealth(entry),
                 requests: entry ? entry.requests : null, failures: entry ? entry.connect_failures : null };
      }),
    }));
  }

  // Requests per second from two /stats samples ({at: ms, routing}); null without two
  // samples, or when the counters went back (the node restarted in between).
  function requestRate(prev, cur) {
    if (!prev || !cur || !prev.routing || !cur.routing) return null;
    const seconds = (cur.at - prev.at) / 1000;
    const served = (r) => Number(r.local_requests) + Number(r.forwarded_requests);
    const done = served(cur.routing) - served(prev.routing);
    const failed = Number(cur.routing.failed_requests) - Number(prev.routing.failed_requests);
    if (!(seconds > 0) || done < 0 || failed < 0) return null;
    return { requests: done / seconds, failed: failed / seconds };
  }

  // What is wrong now, as key -> message; a key that was not there before is an event.
  function conditions(snap, nodes, failures) {
    const found = new Map();
    const health = snap.health;
    if (health && health.status !== "healthy") found.set("status", `this node is ${health.status}`);
    for (const [name, state] of Object.entries((health && health.components) || {})) {
      if (state !== "SERVING") found.set("component:" + name, `component ${name} is ${state}`);
    }
    if (health && health.gateway && health.gateway.last_nack) {
      found.set("nack:" + health.gateway.last_nack, `Envoy refused a configuration: ${health.gateway.last_nack}`);
    }
    for (const b of (snap.stats && snap.stats.backends) || []) {
      if (!b.healthy) found.set("backend:" + b.name, `service ${b.name}: ${b.last_error || "unhealthy"}`);
    }
    for (const f of (snap.peers && snap.peers.forwarding) || []) {
      const key = `forward:${f.service}:${f.worker_id}`;
      if (f.ejected) found.set(key, `Envoy ejected ${f.worker_id} (${f.address}) for ${f.service}`);
      else if (f.reachable === false) {
        found.set(key, `${f.worker_id} (${f.address}) unreachable for ${f.service}: ${f.connect_failures} failed connections`);
      }
    }
    for (const u of (snap.peers && snap.peers.unverified) || []) {
      found.set("unverified:" + u.address, `records from ${u.address} (claiming ${u.worker_id || "?"}) ` +
                "could not be verified: another mesh's secret or CA, or revoked");
    }
    for (const node of nodes) {
      if (node.state === "gone") found.set("gone:" + node.id, `node ${node.id} left the mesh (no records)`);
    }
    for (const [source, message] of Object.entries(failures || {})) {
      found.set("poll:" + source, `GET ${source}: ${message}`);
    }
    return found;
  }

  // The event log after one update: new conditions, and requests that failed since the last sample.
  function nextEvents(events, before, now, current, rateSample) {
    const added = [];
    for (const [key, message] of current) {
      if (!before || !before.has(key)) added.push({ at: now, key, message });
    }
    if (rateSample && rateSample.prev && rateSample.cur) {
      const failed = Number(rateSample.cur.routing.failed_requests) - Number(rateSample.prev.routing.failed_requests);
      if (failed > 0) added.push({ at: now, key: "failed", message: `${failed} request(s) failed (5xx from a backend or peer)` });
    }
    return [...added, ...events].slice(0, MAX_EVENTS);
  }

  // Which view the address asks for: `#node=<id>`, `#service=<name>`, or the same as a
  // query (`/?node=<id>`); the fragment wins, as the page's own links set it.
  function parseView(search, hash) {
    for (const params of [new URLSearchParams((hash || "").replace(/^#/, "")), new URLSearchParams(search || "")]) {
      const node = (params.get("node") || "").trim();
      const service = (params.get("service") || "").trim();
      if (node) return { kind: "node", name: node };
      if (service) return { kind: "service", name: service };
    }
    return { kind: "mesh" };
  }

  // The view resolved against the data: "missing" names what exists instead.
  function resolveView(view, nodes, services, ready) {
    if (view.kind === "mesh") return view;
    if (!ready) return { kind: "loading", name: view.name, what: view.kind };
    const known = view.kind === "node" ? nodes.map((n) => n.id) : services.map((s) => s.name);
    if (!known.includes(view.name)) return { kind: "missing", what: view.kind, name: view.name, known };
    return view;
  }

  function formatBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
  }

  function formatAge(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "—";
    const s = Math.max(0, Number(seconds));
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min`;
    if (s < 48 * 3600) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function formatRate(perSecond) {
    if (perSecond === null || perSecond === undefined) return "—";
    return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(perSecond > 0 && perSecond < 0.1 ? 2 : 1);
  }

  const api = { hostOf, forwardingHealth, buildNodes, buildServices, requestRate, conditions, nextEvents,
                parseView, resolveView, formatBytes, formatAge, formatRate, FORGET_GONE_MS };
  root.MeshStatus = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof window !== "undefined" ? window : globalThis);
