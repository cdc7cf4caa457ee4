// The admin dashboard: draws the admin app's /stream (server-sent events). No build step.
"use strict";

const HISTORY = 60; // points kept per sparkline
const history = new Map(); // circuit name -> [{rate, errors}]
let source = null;
let lastFlags = "";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function token() { return $("token").value.trim(); }

function fmt(n, digits) {
  if (n === null || n === undefined) return "–";
  return Number(n).toFixed(digits);
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 30`);
  svg.setAttribute("preserveAspectRatio", "none");
  const maxRate = Math.max(1e-9, ...points.map((p) => p.rate));
  const line = (cls, y) => {
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("class", cls);
    const off = HISTORY - points.length;
    pl.setAttribute("points", points.map((p, i) => `${off + i},${(30 - y(p) * 28 - 1).toFixed(2)}`).join(" "));
    svg.append(pl);
  };
  line("rate", (p) => p.rate / maxRate);
  line("errors", (p) => p.errors);
  return svg;
}

function tile(c) {
  const points = history.get(c.name) || [];
  return el("div", { class: `tile state-${c.state}`, id: `circuit-${c.name}`, "data-circuit": c.name },
    el("h3", {}, c.name, " ", el("span", { class: "state" }, c.state.replace("_", " "))),
    el("dl", {},
      el("dt", {}, "rate"), el("dd", { class: "rate" }, `${fmt(c.rate, 1)}/s`),
      el("dt", {}, "errors"), el("dd", { class: "error-rate" }, `${fmt(c.error_rate * 100, 1)}%`),
      el("dt", {}, "p50"), el("dd", { class: "p50" }, `${fmt(c.latency_ms.p50, 1)} ms`),
      el("dt", {}, "p99"), el("dd", { class: "p99" }, `${fmt(c.latency_ms.p99, 1)} ms`),
      el("dt", {}, "short-circuited"), el("dd", {}, c.counts.short_circuited),
      el("dt", {}, "rejected"), el("dd", {}, c.counts.rejected)),
    sparkline(points));
}

function drawCircuits(circuits) {
  for (const c of circuits) {
    const points = history.get(c.name) || [];
    points.push({ rate: c.rate, errors: c.error_rate });
    if (points.length > HISTORY) points.shift();
    history.set(c.name, points);
  }
  const box = $("circuits");
  if (!circuits.length) {
    box.replaceChildren(el("p", { class: "empty" }, "no dependencies registered"));
    return;
  }
  box.replaceChildren(...circuits.map(tile));
}

function drawPools(pools) {
  const rows = Object.entries(pools).map(([name, p]) => el("tr", { "data-pool": name },
    el("td", {}, name), el("td", {}, p.running), el("td", {}, p.queued), el("td", {}, p.abandoned),
    el("td", {}, p.pool_size), el("td", {}, p.queue_size), el("td", {}, p.executed)));
  $("pools").tBodies[0].replaceChildren(...rows);
}

function zoneRows(zones) {
  const entries = Array.isArray(zones) ? zones.map((z, i) => [z.name || z.zone || String(i), z]) : Object.entries(zones);
  return entries.map(([name, z]) => {
    const info = typeof z === "object" && z !== null ? z : { value: z };
    const up = info.up === undefined ? null : Boolean(info.up);
    const rate = info.hit_rate != null ? `${fmt(info.hit_rate * 100, 1)}%` : "–";
    const rest = Object.entries(info).filter(([k]) => !["up", "hit_rate", "name", "zone"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    return el("tr", { "data-zone": name },
      el("td", {}, name),
      el("td", { class: up === null ? "" : up ? "zone-up" : "zone-down" }, up === null ? "?" : up ? "up" : "down"),
      el("td", {}, rate), el("td", {}, rest));
  });
}

function drawCaches(caches) {
  const names = Object.keys(caches);
  if (!names.length) {
    $("caches").replaceChildren(el("p", { class: "empty" }, "no caches"));
    return;
  }
  $("caches").replaceChildren(...names.map((name) => {
    const st = caches[name] || {};
    const zones = st.zones || {};
    const table = el("table", { "data-cache": name },
      el("thead", {}, el("tr", {}, el("th", {}, "zone"), el("th", {}, "state"), el("th", {}, "hit rate"), el("th", {}, "details"))),
      el("tbody", {}, ...zoneRows(zones)));
    return el("div", {}, el("h3", {}, name), table);
  }));
}

function flagEntries(status) {
  const flags = status && typeof status.flags === "object" && status.flags !== null ? status.flags : status || {};
  return Object.entries(flags).filter(([, v]) => v !== undefined);
}

function shown(info) {
  if (info === null || typeof info !== "object") return info;
  if ("value" in info) return info.value;
  if ("on" in info) return info.on;
  return info;
}

async function changeFlag(name, method, value) {
  const msg = $("flag-message");
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const resp = await fetch(`flags/${encodeURIComponent(name)}`, {
    method, headers, body: method === "POST" ? JSON.stringify({ value }) : undefined,
  });
  if (resp.ok) {
    msg.className = "ok";
    msg.textContent = `${name}: ${method === "POST" ? "set to " + JSON.stringify(value) : "override cleared"}`;
    lastFlags = "";
    if (document.activeElement) document.activeElement.blur(); // done editing: redraw now
    drawFlags(await resp.json());
  } else {
    msg.className = "error";
    msg.textContent = `${name}: ${resp.status} ${await resp.text()}`;
  }
}

function parseValue(text) {
  try { return JSON.parse(text); } catch (e) { return text; }
}

function drawFlags(status) {
  // Only what the table shows decides a redraw: a flags status also carries counters that
  // change on every evaluation, and redrawing then would swap the inputs under the operator.
  const text = JSON.stringify(status ? flagEntries(status).map(([n, i]) => [n, shown(i)]) : status);
  const box = $("flags");
  // Redrawing would throw away what an operator is typing.
  if (text === lastFlags || box.contains(document.activeElement)) return;
  lastFlags = text;
  const entries = status ? flagEntries(status) : [];
  if (!entries.length) {
    box.replaceChildren(el("p", { class: "empty" }, status && status.error ? status.error : "no flags"));
    return;
  }
  const rows = entries.map(([name, info]) => {
    const input = el("input", { class: "flag-value", value: JSON.stringify(shown(info)) });
    const set = el("button", { class: "flag-set", type: "button" }, "set");
    set.addEventListener("click", () => changeFlag(name, "POST", parseValue(input.value)));
    const clear = el("button", { class: "flag-clear", type: "button" }, "clear");
    clear.addEventListener("click", () => changeFlag(name, "DELETE"));
    return el("tr", { "data-flag": name },
      el("td", {}, name),
      el("td", { class: "flag-current" }, JSON.stringify(shown(info))),
      el("td", {}, input, set, clear));
  });
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "flag"), el("th", {}, "value"), el("th", {}, "change"))),
    el("tbody", {}, ...rows)));
}

function onState(state) {
  drawCircuits(state.circuits);
  drawPools(state.pools);
  drawCaches(state.caches);
  drawFlags(state.flags);
  $("updated").textContent = `updated ${new Date(state.time * 1000).toLocaleTimeString()}`;
}

function onChange(change) {
  const item = el("li", {}, `${new Date(change.time * 1000).toLocaleTimeString()} ${change.dependency}: ${change.old} → ${change.new} (${change.reason})`);
  $("events").prepend(item);
  const t = document.querySelector(`[data-circuit="${CSS.escape(change.dependency)}"]`);
  if (t) {
    t.className = `tile state-${change.new}`;
    t.querySelector(".state").textContent = change.new.replace("_", " ");
  }
}

function connect() {
  if (source) source.close();
  const url = token() ? `stream?access_token=${encodeURIComponent(token())}` : "stream";
  source = new EventSource(url);
  source.addEventListener("open", () => { $("conn").className = "conn up"; $("conn").textContent = "live"; });
  source.addEventListener("error", () => { $("conn").className = "conn down"; $("conn").textContent = "reconnecting"; });
  source.addEventListener("state", (e) => onState(JSON.parse(e.data)));
  source.addEventListener("state_change", (e) => onChange(JSON.parse(e.data)));
}

$("token").value = sessionStorage.getItem("resilience-admin-token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("resilience-admin-token", token());
  connect();
});
connect();
