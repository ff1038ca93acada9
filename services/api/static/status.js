// The status page's shell: polls this node's JSON endpoints, hands them to model.js, and
// writes the result into the page. Everything from the network is written as text
// (textContent, never innerHTML): service names and worker ids come from other nodes.
"use strict";

(function () {
  const M = window.MeshStatus;
  const SOURCES = { health: "/health", stats: "/stats", services: "/mesh/services", peers: "/mesh/peers",
                    models: "/v1/models" };
  const INTERVAL_MS = 2000;
  // /mesh/services may look up in the DHT each service the router has not cached, and
  // /mesh/peers pings every DHT peer: the mesh-wide views are asked for less often.
  const PERIOD_MS = { health: INTERVAL_MS, stats: INTERVAL_MS, services: 3 * INTERVAL_MS, peers: 3 * INTERVAL_MS,
                      models: 3 * INTERVAL_MS };
  const HIDDEN_INTERVAL_MS = 10000; // a tab in the background asks less often
  const TIMEOUT_MS = 5000;
  const COUNTERS = ["local_requests", "forwarded_requests", "failed_requests", "cache_hits", "cache_misses",
                    "dht_lookups", "cache_size", "cache_hit_rate"];

  const state = { snap: {}, failures: {}, tried: {}, seen: new Map(), unreachable: false, conditions: null, events: [], samples: [],
                  lastOk: null, nodes: [], services: [], rate: null, ready: false };

  // ---- small DOM helpers -------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const badge = (text, kind) => el("span", { class: `badge state-${kind || text}` }, text);
  const viewLink = (key, name, label) => el("a", { href: `#${key}=${encodeURIComponent(name)}` }, label || name);
  // One wrapper per cell: on a phone each cell is a grid of its label and this value.
  const cell = (label, ...children) => el("td", { "data-label": label }, el("span", { class: "value" }, ...children));
  const time = (ms) => new Date(ms).toLocaleTimeString();

  // ---- fetching ----------------------------------------------------------------------
  async function fetchJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const reply = await fetch(path, { signal: controller.signal, cache: "no-store",
                                        headers: { Accept: "application/json" } });
      let body = null;
      try {
        body = await reply.json();
      } catch (err) {
        body = null;
      }
      // /health answers 503 with its whole document while the node is unhealthy: that is data.
      if ((reply.ok || path === SOURCES.health) && body && typeof body === "object" && !body.error) return body;
      const message = body && body.error && body.error.message;
      throw new Error(`HTTP ${reply.status}${message ? ": " + message : ""}`);
    } catch (err) {
      if (err.name === "AbortError") throw new Error(`no answer within ${TIMEOUT_MS / 1000} s`);
      if (err instanceof TypeError) throw new Error("no connection"); // fetch's network error
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  // One round: every source whose period has passed. A source's failure stands until it answers again.
  async function poll() {
    const started = Date.now();
    const due = Object.keys(SOURCES).filter((name) => !(started - (state.tried[name] || 0) < PERIOD_MS[name] - 100));
    due.forEach((name) => { state.tried[name] = started; });
    const results = await Promise.allSettled(due.map((name) => fetchJson(SOURCES[name])));
    const now = Date.now();
    let newSample = false;
    results.forEach((result, i) => {
      const name = due[i];
      if (result.status === "fulfilled") {
        state.snap[name] = result.value;
        delete state.failures[SOURCES[name]];
        state.lastOk = now;
      } else {
        state.failures[SOURCES[name]] = result.reason.message;
      }
    });
    state.unreachable = due.length > 0 && due.every((name) => state.failures[SOURCES[name]]);
    if (due.includes("stats") && !state.failures[SOURCES.stats] && state.snap.stats) {
      state.samples = [...state.samples, { at: now, routing: state.snap.stats.routing }].slice(-2);
      newSample = state.samples.length === 2;
    }
    // A view can be judged once the node has said who it is and which services it knows.
    state.ready = state.ready || (!!state.snap.health && !!state.snap.services);
    update(now, newSample);
  }

  function update(now, newSample) {
    const built = M.buildNodes(state.snap, state.seen, now);
    state.seen = built.seen;
    state.nodes = built.nodes;
    state.services = M.buildServices(state.snap);
    const [prev, cur] = state.samples;
    if (newSample) state.rate = M.requestRate(prev, cur);
    const current = M.conditions(state.snap, state.nodes, { ...state.failures });
    state.events = M.nextEvents(state.events, state.conditions, now, current, newSample ? { prev, cur } : null);
    state.conditions = current;
    render(now);
  }

  function loop() {
    poll().catch((err) => { // a bug of ours must not stop the polling: say it, and go on
      showBanner(`This page failed to update: ${err.message}`, "error");
    }).finally(() => setTimeout(loop, document.hidden ? HIDDEN_INTERVAL_MS : INTERVAL_MS));
  }

  // ---- rendering ---------------------------------------------------------------------
  function showBanner(text, kind) {
    const banner = $("banner");
    banner.hidden = !text;
    banner.className = `banner ${kind || ""}`;
    banner.textContent = text || "";
  }

  function render(now) {
    const view = M.resolveView(M.parseView(location.search, location.hash), state.nodes, state.services, state.ready);
    renderHeader(now);
    renderNotice(view);
    const shown = filterFor(view);
    $("view-title").textContent = view.kind === "node" ? `Node ${view.name}`
      : view.kind === "service" ? `Service ${view.name}` : "Whole mesh";
    renderTiles(shown);
    renderNodes(shown.nodes);
    renderServices(shown.services);
    renderModels(shown.models);
    renderRouting();
    renderPeers();
    renderEvents();
  }

  function renderHeader(now) {
    const health = state.snap.health;
    $("worker").textContent = health ? health.worker_id : "";
    const status = state.unreachable ? "unreachable" : health ? health.status : "unknown";
    const stateBadge = $("node-state");
    stateBadge.textContent = status;
    stateBadge.className = `badge state-${status}`;
    document.title = `meshworker ${health ? health.worker_id : ""}: ${status}`;
    const failed = Object.entries(state.failures);
    document.body.classList.toggle("stale", state.unreachable);
    if (state.unreachable) { // nothing answered in the last round
      const since = state.lastOk ? `showing what it said ${M.formatAge((now - state.lastOk) / 1000)} ago` : "no data yet";
      $("freshness").textContent = "unreachable";
      showBanner(`This node's gateway (${location.host}) is unreachable: ${failed[0][1]}. ` +
                 `Still trying every ${INTERVAL_MS / 1000} s; ${since}.`, "error");
    } else {
      $("freshness").textContent = `updated ${time(now)}`;
      showBanner(failed.length ? "Part of the data is stale: " + failed.map(([s, m]) => `${s}: ${m}`).join("; ") : "",
                 "warning");
    }
  }

  function renderNotice(view) {
    const notice = $("notice");
    notice.replaceChildren();
    notice.hidden = !(view.kind === "missing" || view.kind === "loading" || view.kind === "node" || view.kind === "service");
    const whole = el("a", { href: location.pathname }, "Show the whole mesh");
    if (view.kind === "loading") {
      notice.append(`Looking for ${view.what} “${view.name}”… `, whole);
    } else if (view.kind === "missing") {
      notice.className = "notice missing";
      const known = view.known.length ? `Known ${view.what}s: ${view.known.join(", ")}.` : `This mesh has no ${view.what}s yet.`;
      notice.append(`No ${view.what} named “${view.name}” in this mesh (it may have left). ${known} `, whole);
      return;
    } else if (!notice.hidden) {
      notice.append(whole);
    }
    notice.className = "notice";
  }

  // What a view shows: a node's own services and models, a service's providers and models.
  function filterFor(view) {
    const models = ((state.snap.models && state.snap.models.data) || []).filter((m) => !m.alias_of);
    if (view.kind === "node") {
      return { nodes: state.nodes.filter((n) => n.id === view.name),
               services: state.services.filter((s) => s.providers.some((p) => p.worker === view.name)),
               models: models.filter((m) => (m.nodes || []).some((n) => n.worker_id === view.name)) };
    }
    if (view.kind === "service") {
      const service = state.services.find((s) => s.name === view.name);
      const workers = new Set(service.providers.map((p) => p.worker));
      return { nodes: state.nodes.filter((n) => workers.has(n.id)), services: [service],
               models: models.filter((m) => (m.nodes || []).some((n) => n.service === view.name)) };
    }
    return { nodes: state.nodes, services: state.services, models };
  }

  function renderTiles(shown) {
    $("tile-nodes").textContent = shown.nodes.filter((n) => n.state !== "gone").length;
    $("tile-services").textContent = shown.services.length;
    $("tile-models").textContent = shown.models.length;
    $("tile-rate").textContent = M.formatRate(state.rate && state.rate.requests);
    $("tile-failed-rate").textContent = M.formatRate(state.rate && state.rate.failed);
    const peers = state.snap.peers && state.snap.peers.peers;
    $("tile-peers").textContent = peers ? peers.length : "—";
  }

  function gpuText(gpu) {
    if (!gpu) return "none";
    if (!gpu.total) return gpu.name;
    const use = gpu.utilization === null || gpu.utilization === undefined ? "" : ` · ${gpu.utilization}% busy`;
    return `${gpu.count > 1 ? gpu.count + "× " : ""}${gpu.name} · ${M.formatBytes(gpu.used)} of ${M.formatBytes(gpu.total)}${use}`;
  }

  function memoryText(node) {
    if (!node.memory) return node.self ? "—" : "not announced";
    const parts = [];
    if (node.memory.cores) parts.push(`${node.memory.cores} cores`);
    if (node.memory.ram) parts.push(`${M.formatBytes(node.memory.ram)} RAM`);
    if (node.memory.backends) parts.push(`backends ${M.formatBytes(node.memory.backends)}`);
    return parts.join(" · ") || "—";
  }

  function loadBar(percent) {
    if (percent === null || percent === undefined) return "—";
    const level = percent >= 90 ? "high" : percent >= 50 ? "mid" : "low";
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.min(100, Math.max(0, percent))}%`; // CSSOM: allowed by the page's CSP
    const bar = el("span", { class: `bar ${level}` }, fill);
    return el("span", { class: "load" }, bar, ` ${percent}%`);
  }

  function recordText(node) {
    if (node.self) return "this node";
    if (node.state === "gone") return `last seen ${time(node.lastSeen)}`;
    return node.recordAge === null ? "—" : `${M.formatAge(node.recordAge)} old`;
  }

  function renderNodes(nodes) {
    const rows = nodes.map((n) => el("tr", { class: n.state === "gone" ? "gone" : null, "data-node": n.id },
      cell("Node", viewLink("node", n.id), n.self ? el("span", { class: "tag" }, "this node") : null),
      cell("State", badge(n.state)),
      cell("Address", n.address || (n.self ? "no overlay" : "—")),
      cell("Services", chips(n.services.map((s) => el("span", { class: `chip state-${s.health}`, title: s.error || s.health },
                                                    viewLink("service", s.name))))),
      cell("Models", chips(n.models.map((m) => el("span", { class: "chip" }, m.id)))),
      cell("GPU", gpuText(n.gpu)),
      cell("Memory", memoryText(n)),
      cell("Load", loadBar(n.load)),
      cell("Record", recordText(n))));
    fillTable("nodes", rows, 9, "No node known yet.");
  }

  function chips(list) {
    return list.length ? el("span", { class: "chips" }, list) : el("span", { class: "muted" }, "none");
  }

  function renderServices(services) {
    const rows = services.map((s) => el("tr", { "data-service": s.name },
      cell("Service", viewLink("service", s.name)),
      cell("Providers", el("ul", { class: "providers" }, s.providers.map((p) => el("li", {},
        viewLink("node", p.worker), " ", badge(p.health), " ",
        el("span", { class: "muted" }, [p.local ? "local" : p.address, p.model, p.requests !== null ? `${p.requests} requests` : null,
                                        p.failures ? `${p.failures} failed connections` : null].filter(Boolean).join(" · "))))))));
    fillTable("services", rows, 2, "No service in this mesh yet.");
  }

  function renderModels(models) {
    const rows = models.map((m) => el("tr", {},
      cell("Model", m.id),
      cell("Kind", m.kind || "—"),
      cell("Context", m.context_length ? `${m.context_length} tokens` : "—"),
      cell("Nodes", chips((m.nodes || []).map((n) => el("span", { class: "chip" }, viewLink("node", n.worker_id),
                                                        ` ${n.load_percent || 0}%`))))));
    fillTable("models", rows, 4, "No model in this mesh.");
  }

  function fillTable(id, rows, columns, empty) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty))]));
  }

  function renderRouting() {
    const routing = (state.snap.stats && state.snap.stats.routing) || {};
    const entries = COUNTERS.map((name) => {
      const value = routing[name];
      const shown = value === undefined ? "—" : name === "cache_hit_rate" ? `${Math.round(value * 100)}%` : value;
      return el("div", { class: "counter" }, el("dt", {}, name.replaceAll("_", " ")), el("dd", { id: `counter-${name}` }, shown));
    });
    $("counters").replaceChildren(...entries);
    const health = state.snap.health;
    const components = Object.entries((health && health.components) || {});
    $("components").replaceChildren(...components.map(([name, s]) => el("li", {}, badge(s === "SERVING" ? "serving" : s.toLowerCase(),
                                                                                      s === "SERVING" ? "healthy" : "unhealthy"), ` ${name}`)));
    $("node-meta").textContent = health
      ? `version ${health.version} · up ${M.formatAge(health.uptime)} · overlay ${health.vpn_ip || "none"}` +
        (health.gateway ? ` · Envoy config v${health.gateway.acked_version}` : "")
      : "";
  }

  function renderPeers() {
    const peers = (state.snap.peers && state.snap.peers.peers) || [];
    const rows = peers.map((p) => el("tr", {},
      cell("Node id", el("code", {}, String(p.node_id).slice(0, 16))),
      cell("Address", p.address),
      cell("Reachable", badge(p.reachable ? "yes" : "no", p.reachable ? "healthy" : "unreachable")),
      cell("Round trip", p.reachable ? `${(p.rtt_seconds * 1000).toFixed(2)} ms` : "—")));
    fillTable("peers", rows, 4, "No DHT peer: this node is alone (or its seeds are down).");
  }

  function renderEvents() {
    const items = state.events.map((e) => el("li", { class: state.conditions && state.conditions.has(e.key) ? "active" : null },
      el("time", {}, time(e.at)), " ", e.message));
    $("events").replaceChildren(...(items.length ? items : [el("li", { class: "none" }, "none so far")]));
  }

  window.addEventListener("hashchange", () => {
    try {
      render(Date.now());
    } catch (err) {
      showBanner(`This page failed to update: ${err.message}`, "error");
    }
  });
  loop();
})();
