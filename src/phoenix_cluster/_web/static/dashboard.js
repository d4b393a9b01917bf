// Phoenix live dashboard: follows /api/events (server-sent events) and redraws.
// No framework and no CDN: a few DOM helpers and SVG polylines.
"use strict";

const WINDOW = 120; // samples shown in the charts (two minutes at one a second)
const SVG = "http://www.w3.org/2000/svg";
const state = { samples: [], events: [], cluster: null };

// ---------------------------------------------------------------- formatting

function seconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1e-3) return `${(v * 1e6).toFixed(0)} µs`;
  if (v < 1) return `${(v * 1e3).toFixed(v < 0.01 ? 2 : 1)} ms`;
  return `${v.toFixed(2)} s`;
}

function count(v) {
  if (v === null || v === undefined) return "–";
  if (Number.isInteger(v) || v >= 100) return Math.round(v).toLocaleString("en");
  return v.toFixed(v >= 10 ? 0 : 1);
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- cluster

function renderCluster(c) {
  document.getElementById("node-name").textContent = c.node;
  document.title = `Phoenix · ${c.node}`;
  const ready = document.getElementById("ready");
  ready.textContent = c.ready ? "ready" : `not ready: ${c.ready_reason}`;
  ready.className = `badge ${c.ready ? "ok" : "warn"}`;

  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  let alive = 0;
  let agents = 0;
  for (const m of c.members) {
    if (m.status === "alive") alive += 1;
    if (m.agents !== null && m.agents !== undefined) agents += m.agents;
    const row = el("tr", { "data-member": m.name, "data-role": m.role });
    const status = el("td");
    status.append(el("span", { class: `status ${m.status}` }, m.status));
    row.append(
      el("td", {}, m.name + (m.name === c.node ? " (this node)" : "")),
      status,
      el("td", { class: "num" }, String(m.incarnation)),
      el("td", {}, m.role),
      el("td", { class: "mono" }, m.address),
    );
    const share = el("td", { class: "share" });
    if (m.role === "member" && m.ring_share > 0) {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${(m.ring_share * 100).toFixed(1)}%`;
      share.append(bar, el("span", {}, `${(m.ring_share * 100).toFixed(1)} %`));
    } else {
      share.textContent = "–";
    }
    // null: a member that did not answer in time; clients host no agents.
    const hosted = m.role !== "member" ? "–" : m.agents === null ? "?" : count(m.agents);
    row.append(share, el("td", { class: "num" }, hosted));
    body.append(row);
  }
  document.getElementById("fig-alive").textContent = `${alive} / ${c.members.length}`;
  document.getElementById("fig-agents").textContent = count(agents);

  const sb = c.split_brain;
  const d = sb.last_decision;
  document.getElementById("split-brain").textContent =
    `split-brain strategy: ${sb.strategy}; last decision: ` +
    (d ? `${d.action}: ${d.reason}` : "none");
}

// ---------------------------------------------------------------- charts

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// series: [{key, label, cls}]; fmt turns a value into text.
function drawChart(id, series, fmt) {
  const fig = document.getElementById(id);
  const samples = state.samples.slice(-WINDOW);
  const w = 600, h = 150, pad = 4;
  let max = 0;
  for (const s of samples) for (const { key } of series) if (s[key] > max) max = s[key];
  max = niceMax(max);

  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const frac of [0.25, 0.5, 0.75]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", 0); line.setAttribute("x2", w);
    line.setAttribute("y1", h * frac); line.setAttribute("y2", h * frac);
    line.setAttribute("class", "grid");
    svg.append(line);
  }
  // Newest sample at the right edge; a young history is stretched over at least 30.
  const span = Math.max(samples.length, 30) - 1;
  const offset = span - (samples.length - 1);
  for (const { key, cls } of series) {
    const points = [];
    samples.forEach((s, i) => {
      const v = s[key];
      if (v === null || v === undefined) return;
      const x = ((offset + i) / span) * w;
      const y = h - pad - (v / max) * (h - 2 * pad);
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", `series ${cls}`);
    svg.append(line);
  }

  const legend = el("div", { class: "legend" });
  legend.append(el("span", { class: "muted" }, `max ${fmt(max)}`));
  const last = samples[samples.length - 1] || {};
  for (const { key, label, cls } of series) {
    legend.append(el("span", { class: `key ${cls}` }, `${label} ${fmt(last[key])}`));
  }
  fig.querySelector("svg")?.remove();
  fig.querySelector(".legend")?.remove();
  fig.append(svg, legend);
  fig.dataset.samples = String(samples.length);
  fig.dataset.last = String(last[series[0].key] ?? "");
}

function renderSamples() {
  drawChart("chart-rate", [{ key: "messages_per_s", label: "messages/s", cls: "s1" }], count);
  drawChart("chart-latency", [
    { key: "p50_s", label: "p50", cls: "s1" },
    { key: "p95_s", label: "p95", cls: "s2" },
    { key: "p99_s", label: "p99", cls: "s3" },
  ], seconds);
  drawChart("chart-lag", [{ key: "loop_lag_s", label: "lag", cls: "s2" }], seconds);
  const last = state.samples[state.samples.length - 1];
  if (last) {
    document.getElementById("fig-rate").textContent = count(last.messages_per_s);
    document.getElementById("fig-p95").textContent = seconds(last.p95_s);
    document.getElementById("fig-lag").textContent = seconds(last.loop_lag_s);
  }
}

// ---------------------------------------------------------------- events

function renderEvents() {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const e of state.events.slice(-50).reverse()) {
    const item = el("li", { "data-type": e.type });
    item.append(el("time", {}, clock(e.t)), el("span", { class: `tag ${e.type}` }, e.type),
      el("span", {}, e.text));
    list.append(item);
  }
  if (!state.events.length) list.append(el("li", { class: "muted" }, "no events yet"));
}

// ---------------------------------------------------------------- agents
// /api/agents/list and /api/agents/show: what `phx agents list` and `show` print.

const AGENTS_SHOWN = 200;

async function listAgents() {
  const kind = document.getElementById("agents-kind").value.trim();
  const note = document.getElementById("agents-note");
  const query = new URLSearchParams({ limit: String(AGENTS_SHOWN) });
  if (kind) query.set("kind", kind);
  const body = document.querySelector("#agents tbody");
  let response, data;
  try {
    response = await fetch(`/api/agents/list?${query}`);
    data = await response.json();
  } catch (err) {
    note.textContent = `cannot list agents: ${err}`;
    return;
  }
  body.replaceChildren();
  if (!response.ok) {
    note.textContent = data.error;
    return;
  }
  const now = Date.now() / 1000;
  for (const a of data.agents.slice(0, AGENTS_SHOWN)) {
    const row = el("tr", { "data-kind": a.kind, "data-key": a.key });
    const status = a.status + (a.busy ? " (busy)" : "") +
      (a.workers > 1 ? `, ${a.workers} workers` : "");
    const ago = a.last_active === null ? "–" : `${seconds(Math.max(now - a.last_active, 0))} ago`;
    row.append(el("td", {}, a.kind), el("td", { class: "mono" }, a.key), el("td", {}, a.node),
      el("td", {}, status), el("td", { class: "num" }, count(a.mailbox_depth)),
      el("td", {}, ago));
    row.addEventListener("click", () => showAgent(a.kind, a.key));
    body.append(row);
  }
  const missing = data.unreachable.length ? `; no answer from ${data.unreachable.join(", ")}` : "";
  note.textContent = `${count(data.agents.length)} agents` +
    (data.truncated || data.agents.length > AGENTS_SHOWN ? " (more not shown)" : "") + missing;
}

async function showAgent(kind, key) {
  const query = new URLSearchParams({ kind, key });
  const detail = document.getElementById("agent-detail");
  try {
    const response = await fetch(`/api/agents/show?${query}`);
    const data = await response.json();
    detail.textContent = response.ok ? JSON.stringify(data, null, 2) : data.error;
  } catch (err) {
    detail.textContent = `cannot show ${kind}/${key}: ${err}`;
  }
}

document.getElementById("agents-form").addEventListener("submit", (e) => {
  e.preventDefault();
  listAgents();
});

// ---------------------------------------------------------------- stream

function connect() {
  const stream = new EventSource("/api/events");
  const badge = document.getElementById("stream");
  stream.addEventListener("hello", (msg) => {
    const hello = JSON.parse(msg.data);
    state.samples = hello.history;
    state.events = hello.events;
    state.cluster = hello.cluster;
    renderCluster(hello.cluster);
    renderSamples();
    renderEvents();
    badge.textContent = "live";
    badge.className = "badge ok";
  });
  stream.addEventListener("sample", (msg) => {
    state.samples.push(JSON.parse(msg.data));
    if (state.samples.length > 2 * WINDOW) state.samples.splice(0, WINDOW);
    renderSamples();
  });
  stream.addEventListener("cluster", (msg) => {
    state.cluster = JSON.parse(msg.data);
    renderCluster(state.cluster);
  });
  stream.addEventListener("event", (msg) => {
    state.events.push(JSON.parse(msg.data));
    if (state.events.length > 200) state.events.shift();
    renderEvents();
  });
  stream.onerror = () => {
    badge.textContent = "reconnecting…";
    badge.className = "badge warn";
  };
}

connect();
listAgents();
