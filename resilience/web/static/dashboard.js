// The admin dashboard: draws the admin app's /stream (server-sent events). No build step.
"use strict";

const HISTORY = 60; // points kept per sparkline
const MAX_EVENTS = 200; // state changes listed; a flapping circuit must not grow the page forever
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

// Circuits: one tile per dependency, built once and updated in place. Only tiles in (or near)
// the scrolled view are redrawn on a tick, so the cost of an update stays the same at 20 or 500
// dependencies; the others catch up when they scroll into view.
const tiles = new Map(); // name -> {node, state, rate, errors, p50, p99, sc, rej, rateLine, errLine}
const latest = new Map(); // name -> the circuit's last state message
const inView = new Set();
const SEVERITY = { open: 0, forced_open: 1, half_open: 2, forced_closed: 3, closed: 4 };
const observer = "IntersectionObserver" in window
  ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      const name = e.target.dataset.circuit;
      if (e.isIntersecting) {
        inView.add(name);
        const t = tiles.get(name), c = latest.get(name);
        if (t && c) updateTile(t, c);
      } else inView.delete(name);
    }
  }, { root: $("circuits"), rootMargin: "300px 0px" })
  : null;

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function makeTile(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 30`);
  svg.setAttribute("preserveAspectRatio", "none");
  const rateLine = document.createElementNS(ns, "polyline");
  rateLine.setAttribute("class", "rate");
  const errLine = document.createElementNS(ns, "polyline");
  errLine.setAttribute("class", "errors");
  svg.append(rateLine, errLine);
  const dd = (cls) => el("dd", cls ? { class: cls } : {});
  const t = { state: el("span", { class: "state" }), rate: dd("rate"), errors: dd("error-rate"),
    p50: dd("p50"), p99: dd("p99"), sc: dd(), rej: dd(), limit: dd("limit"), rateLine, errLine };
  t.node = el("div", { class: "tile", id: `circuit-${name}`, "data-circuit": name },
    el("h3", {}, name, " ", t.state),
    el("dl", {},
      el("dt", {}, "rate"), t.rate, el("dt", {}, "errors"), t.errors,
      el("dt", {}, "p50"), t.p50, el("dt", {}, "p99"), t.p99,
      el("dt", {}, "short-circuited"), t.sc, el("dt", {}, "rejected"), t.rej,
      el("dt", {}, "limit"), t.limit),
    svg);
  if (observer) observer.observe(t.node);
  return t;
}

// The concurrency limit: an adaptive one shows its algorithm, calls in flight and the latency
// it last saw (and its baseline); a fixed one its size and calls in flight.
function limitText(l) {
  if (!l) return "";
  const inflight = `${l.inflight} in flight`;
  if (l.kind !== "adaptive") return `${l.limit} (${l.kind}), ${inflight}`;
  const rtt = l.rtt_ms == null ? "" : `, rtt ${fmt(l.rtt_ms, 1)} ms`;
  const base = l.baseline_ms == null ? "" : ` (base ${fmt(l.baseline_ms, 1)})`;
  return `${l.limit} ${l.algorithm}, ${inflight}${rtt}${base}`;
}

function points(list, y) {
  const off = HISTORY - list.length;
  return list.map((p, i) => `${off + i},${(30 - y(p) * 28 - 1).toFixed(2)}`).join(" ");
}

function updateTile(t, c) {
  const cls = `tile state-${c.state}`;
  if (t.node.className !== cls) t.node.className = cls;
  setText(t.state, c.state.replace("_", " "));
  setText(t.rate, `${fmt(c.rate, 1)}/s`);
  setText(t.errors, `${fmt(c.error_rate * 100, 1)}%`);
  setText(t.p50, `${fmt(c.latency_ms.p50, 1)} ms`);
  setText(t.p99, `${fmt(c.latency_ms.p99, 1)} ms`);
  setText(t.sc, String(c.counts.short_circuited));
  setText(t.rej, String(c.counts.rejected));
  setText(t.limit, limitText(c.limit));
  const hist = history.get(c.name) || [];
  const maxRate = Math.max(1e-9, ...hist.map((p) => p.rate));
  t.rateLine.setAttribute("points", points(hist, (p) => p.rate / maxRate));
  t.errLine.setAttribute("points", points(hist, (p) => p.errors));
}

function filterText() { return $("filter").value.trim().toLowerCase(); }

function applyFilter() {
  const f = filterText();
  let shown = 0;
  for (const [name, t] of tiles) {
    const hide = f !== "" && !name.toLowerCase().includes(f);
    if (t.node.hidden !== hide) t.node.hidden = hide;
    if (!hide) shown += 1;
  }
  for (const [name, row] of poolRows) {
    const hide = f !== "" && !name.toLowerCase().includes(f);
    if (row.tr.hidden !== hide) row.tr.hidden = hide;
  }
  setText($("shown"), f ? `${shown} of ${tiles.size} shown` : "");
}

function drawCircuits(circuits) {
  for (const c of circuits) {
    const points = history.get(c.name) || [];
    points.push({ rate: c.rate, errors: c.error_rate });
    if (points.length > HISTORY) points.shift();
    history.set(c.name, points);
  }
  const box = $("circuits");
  const names = new Set(circuits.map((c) => c.name));
  for (const [name, t] of tiles) {
    if (names.has(name)) continue;
    if (observer) observer.unobserve(t.node);
    tiles.delete(name); latest.delete(name); history.delete(name); inView.delete(name);
  }
  if (!circuits.length) {
    box.replaceChildren(el("p", { class: "empty" }, "no dependencies registered"));
    setText($("summary"), "");
    return;
  }
  let open = 0;
  const fresh = new Set();
  for (const c of circuits) {
    latest.set(c.name, c);
    if (!tiles.has(c.name)) { tiles.set(c.name, makeTile(c.name)); fresh.add(c.name); }
    if (c.open) open += 1;
  }
  // Trouble first: open circuits lead, then half-open, then the rest by name.
  const order = [...circuits].sort((a, b) => (SEVERITY[a.state] ?? 5) - (SEVERITY[b.state] ?? 5)
    || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const nodes = order.map((c) => tiles.get(c.name).node);
  const current = box.children;
  if (current.length !== nodes.length || nodes.some((n, i) => current[i] !== n)) box.replaceChildren(...nodes);
  for (const c of circuits) {
    if (fresh.has(c.name) || !observer || inView.has(c.name)) updateTile(tiles.get(c.name), c);
  }
  setText($("summary"), `${circuits.length} dependencies, ${open} open`);
  applyFilter();
}

// Pools: one row per dependency with a thread pool, updated in place.
const poolRows = new Map(); // name -> {tr, cells}
const POOL_FIELDS = ["running", "queued", "abandoned", "pool_size", "queue_size", "executed"];

function drawPools(pools) {
  const body = $("pools").tBodies[0];
  const names = Object.keys(pools).sort();
  for (const [name, row] of poolRows) if (!(name in pools)) { row.tr.remove(); poolRows.delete(name); }
  let changed = false;
  for (const name of names) {
    let row = poolRows.get(name);
    if (!row) {
      const cells = POOL_FIELDS.map(() => el("td", {}));
      row = { tr: el("tr", { "data-pool": name }, el("td", {}, name), ...cells), cells };
      poolRows.set(name, row);
      changed = true;
    }
    const p = pools[name] || {};
    POOL_FIELDS.forEach((f, i) => setText(row.cells[i], p[f] === undefined || p[f] === null ? "–" : String(p[f])));
  }
  if (changed) body.replaceChildren(...names.map((n) => poolRows.get(n).tr));
}

// Cache zones: a table per cache (zone, state, hit ratio, errors), like the pools table.
const UP_STATES = new Set(["closed", "forced_closed"]);
const DOWN_STATES = new Set(["open", "forced_open"]);

function zoneList(zones) {
  if (Array.isArray(zones)) return zones.map((z, i) => [String((z && (z.name || z.zone)) || i), z]);
  return zones && typeof zones === "object" ? Object.entries(zones) : [];
}

function zoneCells(z) {
  const info = z && typeof z === "object" ? z : {};
  let state = typeof info.state === "string" ? info.state : null;
  if (state === null && info.up !== undefined) state = info.up ? "up" : "down";
  const cls = state === null ? "" : UP_STATES.has(state) || state === "up" ? "zone-up"
    : DOWN_STATES.has(state) || state === "down" ? "zone-down" : "zone-half";
  const ratio = typeof info.hit_ratio === "number" ? info.hit_ratio
    : typeof info.hit_rate === "number" ? info.hit_rate : null;
  const errors = typeof info.errors === "number" ? String(info.errors) : "–";
  return { state: state === null ? "?" : state.replace("_", " "), cls,
    ratio: ratio === null ? "–" : `${fmt(ratio * 100, 1)}%`, errors };
}

const cacheTables = new Map(); // cache name -> {node, body, message, rows: Map(zone -> cells)}

function drawCaches(caches) {
  const box = $("caches");
  const names = Object.keys(caches || {}).sort();
  if (!names.length) {
    if (cacheTables.size) box.replaceChildren(el("p", { class: "empty" }, "no caches"));
    cacheTables.clear();
    return;
  }
  let changed = false;
  for (const name of [...cacheTables.keys()]) if (!names.includes(name)) { cacheTables.delete(name); changed = true; }
  for (const name of names) {
    let t = cacheTables.get(name);
    if (!t) {
      const body = el("tbody", {});
      const message = el("p", { class: "empty" });
      const table = el("table", { "data-cache": name },
        el("thead", {}, el("tr", {}, el("th", {}, "zone"), el("th", {}, "state"), el("th", {}, "hit ratio"), el("th", {}, "errors"))),
        body);
      t = { node: el("div", { class: "caches" }, el("h3", {}, name), message, table), body, message, rows: new Map() };
      cacheTables.set(name, t);
      changed = true;
    }
    const st = caches[name] || {};
    setText(t.message, typeof st.error === "string" ? st.error : "");
    const zones = zoneList(st.zones);
    const seen = new Set(zones.map(([z]) => z));
    let rowsChanged = false;
    for (const [zone, row] of t.rows) if (!seen.has(zone)) { t.rows.delete(zone); rowsChanged = true; }
    for (const [zone, info] of zones) {
      let row = t.rows.get(zone);
      if (!row) {
        row = { state: el("td", {}), ratio: el("td", { class: "hit-ratio" }), errors: el("td", { class: "errors" }) };
        row.tr = el("tr", { "data-zone": zone }, el("td", {}, zone), row.state, row.ratio, row.errors);
        t.rows.set(zone, row);
        rowsChanged = true;
      }
      const cells = zoneCells(info);
      setText(row.state, cells.state);
      if (row.state.className !== cells.cls) row.state.className = cells.cls;
      setText(row.ratio, cells.ratio);
      setText(row.errors, cells.errors);
    }
    if (rowsChanged) t.body.replaceChildren(...zones.map(([z]) => t.rows.get(z).tr));
  }
  if (changed) box.replaceChildren(...names.map((n) => cacheTables.get(n).node));
}

function flagEntries(status) {
  const flags = status && typeof status.flags === "object" && status.flags !== null ? status.flags : status || {};
  return Object.entries(flags).filter(([, v]) => v !== undefined);
}

// What a flag's row shows and edits: its value when it has one for everybody, else its spec
// (a rollout or rules), which "set" then sends back whole.
function shown(info) {
  if (info === null || typeof info !== "object") return info;
  if (info.static === false && info.spec) return info.spec;
  if ("value" in info) return info.value;
  if ("on" in info) return info.on;
  return info;
}

// Where the page's changes go: the flags' writable source (etcd: every process) when there is
// one, else overrides in this process. Taken from the last status drawn.
let flagStore = null;
// Server time of the last change made from this page: a state message computed before it
// (already on its way) would show the flags as they were, so it is not drawn over the answer.
let flagsAsOf = 0;

function flagRequest(name, info, action, text) {
  const path = `flags/${encodeURIComponent(name)}`;
  // The revision the operator saw, when the flag lives in the store: a change made meanwhile
  // by someone else is refused (409) instead of silently overwritten.
  const revision = flagStore && info.source === flagStore && Number.isInteger(info.version) ? info.version : null;
  if (action === "set") {
    const parsed = parseValue(text);
    const whole = info.static === false && parsed !== null && typeof parsed === "object" && !Array.isArray(parsed);
    const body = whole ? { flag: parsed } : { value: parsed };
    if (revision !== null) body.revision = revision;
    return { url: path, method: "POST", body, what: `set to ${JSON.stringify(parsed)}` };
  }
  if (action === "delete") {
    return { url: revision === null ? path : `${path}?revision=${revision}`, method: "DELETE", what: "deleted" };
  }
  return { url: `${path}?target=override`, method: "DELETE", what: "override cleared" };
}

function whereItWent(answer, name) {
  if (answer.target === "override") {
    return answer.action === "clear" && !answer.changed ? "no override to clear" : "in this process only (override)";
  }
  let text = `in ${answer.target}, revision ${answer.revision}: every process sees it`;
  const now = answer.flags && answer.flags[name];
  if (now && now.overridden) text += "; an override in this process still wins here";
  return text;
}

async function changeFlag(name, info, action, text) {
  const msg = $("flag-message");
  const req = flagRequest(name, info, action, text);
  const headers = { "Content-Type": "application/json", "X-Resilience-Actor": "dashboard" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const resp = await fetch(req.url, {
    method: req.method, headers, body: req.body ? JSON.stringify(req.body) : undefined,
  });
  const isJson = (resp.headers.get("Content-Type") || "").includes("json");
  const answer = isJson ? await resp.json() : { error: await resp.text() };
  msg.dataset.target = resp.ok ? answer.target : "";
  msg.dataset.revision = resp.ok && answer.revision !== null ? answer.revision : "";
  if (resp.ok) {
    msg.className = "ok";
    msg.textContent = `${name}: ${req.what} ${whereItWent(answer, name)}`;
  } else {
    msg.className = "error";
    msg.textContent = `${name}: ${resp.status} ${answer.error}` +
      (resp.status === 409 ? " (the table now shows the current value)" : "");
  }
  // A refused change (401, 400) changed nothing: the row keeps what the operator typed. A
  // conflict (409) or a success did change what the table should show: redraw it now.
  if (resp.ok || resp.status === 409) {
    lastFlags = "";
    if (document.activeElement) document.activeElement.blur(); // done editing: redraw now
  }
  if (resp.ok) {
    flagsAsOf = typeof answer.time === "number" ? answer.time : 0;
    drawFlags(answer);
  }
}

function parseValue(text) {
  try { return JSON.parse(text); } catch (e) { return text; }
}

function flagButton(cls, label, onClick) {
  const button = el("button", { class: cls, type: "button" }, label);
  button.addEventListener("click", onClick);
  return button;
}

function drawFlags(status, asOf) {
  if (asOf !== undefined && asOf < flagsAsOf) return;
  // Only what the table shows decides a redraw: a flags status also carries counters that
  // change on every evaluation, and redrawing then would swap the inputs under the operator.
  const store = status && typeof status.writes_to === "string" ? status.writes_to : null;
  const text = JSON.stringify(status ? [store, flagEntries(status).map(([n, i]) => [n, shown(i), i && i.source, i && i.version])] : status);
  const box = $("flags");
  // Redrawing would throw away what an operator is typing.
  if (text === lastFlags || box.contains(document.activeElement)) return;
  lastFlags = text;
  flagStore = store;
  $("flag-store").textContent = !status ? "" : store
    ? `changes are written to ${store}: every process sees them`
    : "changes are overrides in this process only";
  $("flag-store").dataset.store = store || "";
  const entries = status ? flagEntries(status) : [];
  if (!entries.length) {
    box.replaceChildren(el("p", { class: "empty" }, status && status.error ? status.error : "no flags"));
    return;
  }
  const rows = entries.map(([name, info]) => {
    const input = el("input", { class: "flag-value", value: JSON.stringify(shown(info)) });
    const controls = [input, flagButton("flag-set", "set", () => changeFlag(name, info, "set", input.value))];
    if (store) {
      controls.push(flagButton("flag-delete", "delete", () => {
        // Every process loses the flag at once: one click must not be enough.
        if (window.confirm(`Delete ${name} from ${store}? Every process falls back to its other sources.`)) {
          changeFlag(name, info, "delete");
        }
      }));
      if (info && info.overridden) controls.push(flagButton("flag-clear", "clear override", () => changeFlag(name, info, "clear")));
    } else {
      controls.push(flagButton("flag-clear", "clear", () => changeFlag(name, info, "clear")));
    }
    return el("tr", { "data-flag": name },
      el("td", {}, name),
      el("td", { class: "flag-current" }, JSON.stringify(shown(info))),
      el("td", { class: "flag-source" }, info && info.source ? info.source : "–"),
      el("td", {}, ...controls));
  });
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "flag"), el("th", {}, "value"), el("th", {}, "from"), el("th", {}, "change"))),
    el("tbody", {}, ...rows)));
}

function onState(state) {
  drawCircuits(state.circuits);
  drawPools(state.pools);
  drawCaches(state.caches);
  drawFlags(state.flags, state.time);
  $("updated").textContent = `updated ${new Date(state.time * 1000).toLocaleTimeString()}`;
}

function onChange(change) {
  const item = el("li", {}, `${new Date(change.time * 1000).toLocaleTimeString()} ${change.dependency}: ${change.old} → ${change.new} (${change.reason})`);
  const events = $("events");
  events.prepend(item);
  while (events.children.length > MAX_EVENTS) events.lastElementChild.remove();
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

$("filter").addEventListener("input", applyFilter);
$("token").value = sessionStorage.getItem("resilience-admin-token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("resilience-admin-token", token());
  connect();
});
connect();
