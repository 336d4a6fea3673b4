// The daemon's page: the graph drawn from /api/status once a second, each block's fps
// and CPU over the last hour as small plots (/api/history, every 10 s), a panel with
// pipectl's buttons for the selected block, a live MJPEG view of its wire, and the
// recordings (newest first, by day, gaps shown) played in a <video>.
// The figures are status's own: frames in and out per second (a sink's out: what it
// delivered, written or served), frames missed (it could not keep up) and skipped (by
// design), as `pipectl status` and /metrics show them.
// No framework and no build step: this file is served as it is.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const BOX = { w: 232, h: 124, gapX: 72, gapY: 22, pad: 20 };
const PLOT = { y: 86, h: 28, w: 96, gap: 8 }; // the two small plots in a block's box
const POLL_MS = 1000;
const HISTORY_MS = 10000;
const VIEW = "fps=10&width=960";

const state = { status: null, shape: "", selected: null, viewing: null, busy: false,
  history: null };
const $ = (id) => document.getElementById(id);

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// -- layout: a column per depth (a block sits right of everything it reads) ----------

function layout(blocks) {
  const byName = new Map(blocks.map((b) => [b.name, b]));
  const depth = new Map();
  const visit = (name, path) => {
    if (depth.has(name)) return depth.get(name);
    if (path.has(name)) return 0;
    path.add(name);
    const inputs = (byName.get(name)?.inputs || []).filter((i) => byName.has(i));
    const d = inputs.length ? 1 + Math.max(...inputs.map((i) => visit(i, path))) : 0;
    depth.set(name, d);
    return d;
  };
  blocks.forEach((b) => visit(b.name, new Set()));
  const columns = [];
  for (const b of blocks) (columns[depth.get(b.name)] ||= []).push(b.name);
  const rows = Math.max(...columns.map((c) => c.length));
  const pos = new Map();
  columns.forEach((names, col) => {
    const offset = ((rows - names.length) * (BOX.h + BOX.gapY)) / 2;
    names.forEach((name, row) => {
      pos.set(name, {
        x: BOX.pad + col * (BOX.w + BOX.gapX),
        y: BOX.pad + offset + row * (BOX.h + BOX.gapY),
      });
    });
  });
  const width = BOX.pad * 2 + columns.length * BOX.w + (columns.length - 1) * BOX.gapX;
  const height = BOX.pad * 2 + rows * BOX.h + (rows - 1) * BOX.gapY;
  return { pos, width, height };
}

// -- remote wires: each key another box sends or reads is a node outside the box ---------

const REMOTE = "zenoh:";

function remoteId(w) { return `${REMOTE}${w.direction}:${w.key}`; }

// The nodes and inputs to lay out: the blocks, a node per remote key, and the remote
// blocks reading theirs. A published key hangs off the link (the block named zenoh,
// which reads the published blocks); a remote block reads its key.
function nodes(status) {
  const remote = status.remote_wires || [];
  const names = new Set(status.blocks.map((b) => b.name));
  const link = status.blocks.find((b) => b.type === "zenoh")?.name;
  const extra = new Map();
  const reads = new Map();
  for (const w of remote) {
    const id = remoteId(w);
    if (w.direction === "out") {
      extra.set(id, { name: id, inputs: [link && names.has(link) ? link : w.block], remote: w });
    } else {
      extra.set(id, { name: id, inputs: [], remote: w });
      (reads.get(w.block) || reads.set(w.block, []).get(w.block)).push(id);
    }
  }
  const blocks = status.blocks.map((b) =>
    reads.has(b.name) ? { ...b, inputs: [...reads.get(b.name), ...b.inputs] } : b);
  return [...blocks, ...extra.values()];
}

function draw(status) {
  const svg = $("graph");
  svg.replaceChildren();
  const all = nodes(status);
  const { pos, width, height } = layout(all);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.maxWidth = `${width * 1.25}px`;
  const wires = el("g", { class: "wires" }, svg);
  for (const b of all) {
    for (const input of b.inputs) {
      const from = pos.get(input);
      const to = pos.get(b.name);
      if (!from || !to) continue;
      const x1 = from.x + BOX.w, y1 = from.y + BOX.h / 2, x2 = to.x, y2 = to.y + BOX.h / 2;
      // A wire that skips columns runs straight at its writer's height (between the
      // blocks of the columns it crosses) and bends only in the last gap.
      const bend = Math.max(x1, x2 - BOX.gapX);
      const mid = (bend + x2) / 2;
      const d = `M${x1},${y1} L${bend},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
      if (b.remote || input.startsWith(REMOTE)) {  // it leaves the box, or comes from outside
        el("path", { d, class: "wire remote", "marker-end": "url(#arrow)" }, wires);
        continue;
      }
      const hit = el("path", { d, class: "wire-hit", "data-wire": input, "data-reader": b.name }, wires);
      el("title", {}, hit);
      el("path", { d, class: "wire", "data-wire": input, "marker-end": "url(#arrow)" }, wires);
      hit.addEventListener("click", () => select(input, true));
    }
  }
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#56606b" }, marker);
  for (const n of all.filter((x) => x.remote)) {
    const p = pos.get(n.name);
    const g = el("g", { class: "remote-key", transform: `translate(${p.x},${p.y})`,
      "data-remote": n.name }, svg);
    el("rect", { width: BOX.w, height: BOX.h, rx: 18 }, g);
    el("text", { class: "name", x: 16, y: 24 }, g).textContent = `${REMOTE}${n.remote.key}`;
    el("text", { class: "type", x: 16, y: 44 }, g).textContent =
      n.remote.direction === "out" ? `leaves the box · ${n.remote.encoding}` :
        `from another box · ${n.remote.encoding}`;
    el("text", { class: "stats", x: 16, y: 68 }, g);
    el("title", {}, g);
  }
  for (const b of status.blocks) {
    const p = pos.get(b.name);
    const g = el("g", { class: "block", transform: `translate(${p.x},${p.y})`, tabindex: 0,
      role: "button", "data-name": b.name }, svg);
    el("rect", { width: BOX.w, height: BOX.h, rx: 8 }, g);
    el("rect", { class: "bar", width: 6, height: BOX.h - 16, x: 0, y: 8 }, g);
    el("text", { class: "name", x: 16, y: 24 }, g).textContent = b.name;
    el("text", { class: "state", x: BOX.w - 12, y: 24, "text-anchor": "end" }, g);
    el("text", { class: "type", x: 16, y: 42 }, g).textContent = b.type;
    el("text", { class: "stats", x: 16, y: 61 }, g);
    el("text", { class: "losses", x: 16, y: 77 }, g);
    for (const [i, figure] of [[0, "fps"], [1, "cpu_percent"]]) {
      const x = 16 + i * (PLOT.w + PLOT.gap);
      const plot = el("g", { class: `plot plot-${figure}`, transform: `translate(${x},${PLOT.y})` }, g);
      el("rect", { class: "plot-bg", width: PLOT.w, height: PLOT.h, rx: 2 }, plot);
      el("polyline", { class: "plot-line", points: "" }, plot);
      el("circle", { class: "plot-now", r: 1.8, cx: -10, cy: -10 }, plot);
      el("text", { class: "plot-label", x: 3, y: 9 }, plot).textContent =
        figure === "fps" ? "fps · 1 h" : "CPU · 1 h";
      el("title", {}, plot);
    }
    el("title", {}, g);
    g.addEventListener("click", () => select(b.name, true));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(b.name, true); }
    });
  }
}

// -- live values -----------------------------------------------------------------------

function fmtFps(v) { return v.toFixed(1); } // as pipectl prints it
function fmtBytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(0)} MiB`;
  return `${(n / 1024).toFixed(0)} KiB`;
}
function fmtAge(s) {
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function update(status) {
  const wireNames = new Set(status.wires.map((w) => w.name));
  for (const b of status.blocks) {
    const g = document.querySelector(`.block[data-name="${CSS.escape(b.name)}"]`);
    if (!g) continue;
    g.dataset.state = b.state;
    g.dataset.restarts = String(b.restarts);
    g.dataset.hasWire = wireNames.has(b.name) ? "1" : "0";
    g.classList.toggle("selected", state.selected === b.name);
    const s = g.querySelector(".state");
    s.textContent = b.state;
    s.setAttribute("class", `state s-${b.state}`);
    g.querySelector(".bar").setAttribute("class", `bar s-${b.state}`);
    const rates = b.inputs.length ? `${fmtFps(b.fps_in)} → ${fmtFps(b.fps)}` : fmtFps(b.fps);
    g.querySelector(".stats").textContent =
      `${rates} fps · CPU ${b.cpu_percent.toFixed(0)}% · ↻ ${b.restarts}`;
    const losses = g.querySelector(".losses");
    losses.textContent = `missed ${b.missed} · skipped ${b.skipped}`;
    losses.classList.toggle("missing", b.missed > 0);
    g.querySelector(":scope > title").textContent =
      `${b.name} (${b.type}): ${b.state}${b.reason ? ` — ${b.reason}` : ""}\n` +
      `frames in ${b.frames_in}, out ${b.frames_out}; missed ${b.missed} (could not keep up),` +
      ` skipped ${b.skipped} (by design)`;
  }
  for (const w of status.wires) {
    for (const hit of document.querySelectorAll(`.wire-hit[data-wire="${CSS.escape(w.name)}"]`)) {
      const reader = hit.dataset.reader;
      const lost = reader in w.missed ? `${w.missed[reader]} missed` :
        `${w.skipped[reader] ?? 0} skipped (sampled, by design)`;
      hit.querySelector("title").textContent =
        `${w.name} → ${reader}: ${w.frames} frames, ${lost} by ${reader} (click for a live view)`;
    }
  }
  for (const w of status.remote_wires || []) {
    const g = document.querySelector(`.remote-key[data-remote="${CSS.escape(remoteId(w))}"]`);
    if (!g) continue;
    const moving = w.state === "sending" || w.state === "receiving";
    g.dataset.state = moving ? "up" : "down";
    const rate = w.bytes_per_s !== undefined ? ` · ${fmtBytes(w.bytes_per_s)}/s` : "";
    g.querySelector(".stats").textContent =
      `${w.state}${w.fps !== undefined ? ` · ${fmtFps(w.fps)} fps` : ""}${rate}`;
    g.querySelector("title").textContent =
      `${w.block} ${w.direction === "out" ? "→" : "←"} ${REMOTE}${w.key}: ${w.state}` +
      `${w.peer ? `, peer ${w.peer}` : ""}, ${w.missed ?? 0} missed` +
      `${w.refused ? `, ${w.refused} refused (${w.reason})` : ""}`;
  }
  for (const path of document.querySelectorAll(".wire")) {
    path.classList.toggle("viewed", path.dataset.wire === state.viewing);
  }
  const up = status.blocks.filter((b) => b.state === "RUNNING").length;
  $("summary").textContent = `instance ${status.instance} · run ${status.run} · up ` +
    `${fmtAge(status.uptime_s)} · ${up}/${status.blocks.length} blocks running`;
  updatePanel(status);
}

function updatePanel(status) {
  const b = status.blocks.find((x) => x.name === state.selected);
  if (!b) { closePanel(); return; }
  $("sel-name").textContent = `${b.name} · ${b.type}`;
  const badge = $("sel-state");
  badge.textContent = b.state;
  badge.className = `badge s-${b.state}`;
  const rows = [
    ["state", b.reason ? `${b.state}: ${b.reason}` : b.state],
    ["pid", b.pid ?? "—"],
    ["fps in / out", `${b.inputs.length ? fmtFps(b.fps_in) : "—"} / ${fmtFps(b.fps)}`],
    ["frames in / out", `${b.frames_in} / ${b.frames_out}`],
    ["missed", `${b.missed} (could not keep up)`],
    ["skipped", `${b.skipped} (by design: sampled, or thinned to its own rate)`],
    ["CPU", `${b.cpu_percent.toFixed(1)} %`],
    ["memory", fmtBytes(b.rss_bytes)],
    ["uptime", fmtAge(b.uptime_s)],
    ["restarts", b.restarts],
    ["inputs", b.inputs.join(", ") || "—"],
  ];
  if (b.last_exit) {
    const e = b.last_exit;
    rows.push(["last exit", `${e.signal ? `killed by ${e.signal}` : `code ${e.code}`} at ${e.at}` +
      (e.stderr_tail ? `\n${e.stderr_tail.split("\n").slice(-3).join("\n")}` : "")]);
  }
  const dl = $("details");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k; dl.appendChild(dt);
    const dd = document.createElement("dd"); dd.textContent = String(v); dl.appendChild(dd);
  }
  const hasWire = status.wires.some((w) => w.name === b.name);
  if (hasWire && state.viewing !== b.name) openView(b.name);
  if (!hasWire && state.viewing) closeView();
  drawPanelPlots(b.name);
}

// -- the last hour: small plots in each box, larger ones in the panel -------------------

function points(values, width, height, top, slots) {
  // Newest at the right edge; a block younger than the hour starts part way in.
  const step = width / Math.max(slots - 1, 1);
  const x0 = width - (values.length - 1) * step;
  return values.map((v, i) =>
    `${(x0 + i * step).toFixed(1)},${(height - (Math.min(v, top) / top) * (height - 2) - 1).toFixed(1)}`)
    .join(" ");
}

function plotTop(figure, values) {
  const most = Math.max(0, ...values);
  return figure === "cpu_percent" ? Math.max(100, most) : Math.max(1, most * 1.1);
}

function drawPlots() {
  const h = state.history;
  if (!h) return;
  const slots = h.span_s / h.interval_s;
  for (const [name, series] of Object.entries(h.blocks)) {
    const g = document.querySelector(`.block[data-name="${CSS.escape(name)}"]`);
    if (!g) continue;
    for (const figure of ["fps", "cpu_percent"]) {
      const plot = g.querySelector(`.plot-${figure}`);
      const values = series[figure] || [];
      const top = plotTop(figure, values);
      const line = points(values, PLOT.w, PLOT.h, top, slots);
      plot.querySelector("polyline").setAttribute("points", line);
      const [cx, cy] = (line.split(" ").pop() || "-10,-10").split(",");
      plot.querySelector("circle").setAttribute("cx", cx);
      plot.querySelector("circle").setAttribute("cy", cy);
      plot.dataset.points = String(values.length);
      const what = figure === "fps" ? "frames out per second" : "CPU % (100 = one core)";
      const now = values.length ? values[values.length - 1] : 0;
      plot.querySelector("title").textContent =
        `${name}: ${what} over the last hour; now ${now.toFixed(1)}, at most ` +
        `${Math.max(0, ...values).toFixed(1)}`;
    }
  }
  if (state.selected) drawPanelPlots(state.selected);
}

function drawPanelPlots(name) {
  const svg = $("sel-plots");
  const series = state.history?.blocks?.[name];
  if (!series) { svg.replaceChildren(); return; }
  const slots = state.history.span_s / state.history.interval_s;
  const W = 560, H = 60, gap = 40;
  svg.setAttribute("viewBox", `0 0 ${W} ${2 * H + 2 * gap}`);
  svg.replaceChildren();
  const rows = [
    ["fps", "frames in → out per second", ["fps_in", "fps"]],
    ["cpu_percent", "CPU % (100 = one core)", ["cpu_percent"]],
  ];
  rows.forEach(([figure, label, lines], row) => {
    const y = gap + row * (H + gap);
    const values = lines.flatMap((l) => series[l] || []);
    const top = plotTop(figure, values);
    const plot = el("g", { transform: `translate(0,${y})`, class: "panel-plot" }, svg);
    el("rect", { class: "plot-bg", width: W, height: H, rx: 3 }, plot);
    el("text", { class: "axis", x: 0, y: -6 }, plot).textContent = label;
    el("text", { class: "axis", x: W, y: -6, "text-anchor": "end" }, plot).textContent =
      `top ${top.toFixed(0)}`;
    el("text", { class: "axis", x: 0, y: H + 14 }, plot).textContent = "1 h ago";
    el("text", { class: "axis", x: W, y: H + 14, "text-anchor": "end" }, plot).textContent = "now";
    for (const line of lines) {
      const drawn = points(series[line] || [], W, H, top, slots);
      el("polyline", { class: `plot-line line-${line}`, points: drawn }, plot);
      const [cx, cy] = (drawn.split(" ").pop() || "-10,-10").split(",");
      el("circle", { class: `plot-now line-${line}`, r: 2.5, cx, cy }, plot);
    }
  });
}

async function pollHistory() {
  try {
    const resp = await fetch("/api/history", { cache: "no-store" });
    const body = await resp.json();
    if (resp.ok && body.ok) { state.history = body.result; drawPlots(); }
  } catch (err) {
    // the status poll says when the daemon does not answer
  } finally {
    setTimeout(pollHistory, HISTORY_MS);
  }
}

// -- selection, live view, buttons ---------------------------------------------------

function select(name, fromUser) {
  state.selected = name;
  if (rec.recorders.includes(name) && rec.block !== name) {
    $("rec-block").value = name;
    rec.block = name;
    loadRecordings();
  }
  $("panel").hidden = false;
  $("message").textContent = "";
  if (fromUser) history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  if (state.status) update(state.status);
}

function closePanel() {
  state.selected = null;
  $("panel").hidden = true;
  closeView();
  history.replaceState(null, "", location.pathname);
  document.querySelectorAll(".block.selected").forEach((g) => g.classList.remove("selected"));
}

function openView(wire) {
  state.viewing = wire;
  const img = $("live");
  img.src = `/live/${encodeURIComponent(wire)}.mjpg?${VIEW}`;
  $("view").hidden = false;
  $("view-caption").textContent = `wire ${wire}, live (one of its spare reader slots)`;
}

function closeView() {
  state.viewing = null;
  const img = $("live");
  img.removeAttribute("src"); // drops the connection: the daemon frees the slot
  $("view").hidden = true;
}

$("live").addEventListener("error", () => {
  if (!state.viewing) return;
  const wire = state.viewing;
  $("view-caption").textContent = `no live view of ${wire} now (both viewer slots busy, ` +
    "or the block is not running); retrying…";
  setTimeout(() => { if (state.viewing === wire) openView(wire); }, 3000);
});

async function act(action) {
  const name = state.selected;
  if (!name || state.busy) return;
  state.busy = true;
  const buttons = document.querySelectorAll(".buttons button");
  buttons.forEach((b) => { b.disabled = true; });
  const msg = $("message");
  msg.className = "";
  msg.textContent = `${action} ${name}…`;
  try {
    const resp = await fetch(`/api/blocks/${encodeURIComponent(name)}/${action}`, {
      method: "POST",
      headers: { "X-Pipelined-Request": "1" },
      cache: "no-store",
    });
    const body = await resp.json().catch(() => null);
    if (resp.ok && body && body.ok) {
      msg.textContent = `${action}: done`;
    } else {
      msg.className = "error";
      msg.textContent = body?.error?.message || `${action} failed: HTTP ${resp.status}`;
    }
  } catch (err) {
    msg.className = "error";
    msg.textContent = `${action} failed: ${err}`;
  } finally {
    state.busy = false;
    buttons.forEach((b) => { b.disabled = false; });
    poll();
    if (!rec.paged) loadRecordings();
  }
}

for (const button of document.querySelectorAll(".buttons button")) {
  button.addEventListener("click", () => act(button.dataset.action));
}
$("close").addEventListener("click", closePanel);

// -- recordings: the list and a player -------------------------------------------------

const REC_PAGE = 60;
const REC_POLL_MS = 10000;
const GAP_S = 1.0;
const rec = { recorders: [], block: "", list: [], more: false, paged: false, playing: null };

function recordingUrl(e) {
  return `/recordings/${encodeURIComponent(e.block)}/${encodeURIComponent(e.file)}`;
}

async function loadRecordings(older = false) {
  const params = new URLSearchParams({ order: "newest", limit: String(REC_PAGE) });
  if (rec.block) params.set("block", rec.block);
  const last = rec.list[rec.list.length - 1];
  if (older && last) params.set("after", `${last.block}/${last.file}`);
  let result;
  try {
    const resp = await fetch(`/api/recordings?${params}`, { cache: "no-store" });
    const body = await resp.json().catch(() => null);
    if (!resp.ok || !body?.ok) throw new Error(body?.error?.message || `HTTP ${resp.status}`);
    result = body.result;
  } catch (err) {
    $("rec-message").textContent = `recordings: ${err.message}`;
    return;
  }
  if (showRecorders(result.recorders.map((r) => r.block))) {
    loadRecordings(); // the block selected in the graph is a recorder: show its own
    return;
  }
  rec.list = older ? rec.list.concat(result.recordings) : result.recordings;
  rec.paged = older;
  rec.more = result.more;
  drawRecordings();
}

// Fills the recorder choice; true if it now picked the recorder selected in the graph.
function showRecorders(names) {
  $("recordings").hidden = names.length === 0;
  if (names.join() === rec.recorders.join()) return false;
  rec.recorders = names;
  const pick = $("rec-block");
  pick.replaceChildren(new Option("all recorders", ""), ...names.map((n) => new Option(n, n)));
  const adopt = !rec.block && names.includes(state.selected);
  if (adopt) rec.block = state.selected;
  pick.value = rec.block;
  return adopt;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function drawRecordings() {
  const body = $("rec-list").querySelector("tbody");
  body.replaceChildren();
  let day = "";
  const newer = new Map(); // block -> the entry listed just before (newer) of that block
  for (const e of rec.list) {
    const start = new Date(e.start * 1000);
    const later = newer.get(e.block);
    if (later && later.start - e.end > GAP_S) {
      const row = body.insertRow();
      row.className = "gap";
      cell(row, e.block);
      cell(row, `no recording for ${fmtAge(later.start - e.end)}`).colSpan = 3;
    }
    newer.set(e.block, e);
    if (start.toLocaleDateString() !== day) {
      day = start.toLocaleDateString();
      const row = body.insertRow();
      row.className = "day";
      cell(row, start.toLocaleDateString(undefined, { weekday: "long", year: "numeric",
        month: "long", day: "numeric" })).colSpan = 4;
    }
    const row = body.insertRow();
    row.className = "segment";
    row.dataset.url = recordingUrl(e);
    row.classList.toggle("playing", rec.playing?.file === e.file && rec.playing?.block === e.block);
    cell(row, e.block);
    cell(row, start.toLocaleTimeString());
    cell(row, `${e.duration.toFixed(1)} s`);
    cell(row, fmtBytes(e.bytes));
    row.addEventListener("click", () => play(e));
  }
  $("rec-older").disabled = !rec.more;
  $("rec-message").textContent = rec.list.length ? "" : "no recordings yet";
}

function play(e) {
  rec.playing = e;
  const player = $("player");
  player.src = recordingUrl(e);
  $("playback").hidden = false;
  $("player-caption").textContent =
    `${e.block} · ${new Date(e.start * 1000).toLocaleString()} · ${e.duration.toFixed(1)} s`;
  player.play().catch(() => {}); // a browser may refuse to start by itself; the controls can
  drawRecordings();
}

$("player").addEventListener("ended", () => {
  // On to the next (newer) segment of the same recorder, if it is listed.
  const i = rec.list.indexOf(rec.playing);
  const next = rec.list.slice(0, Math.max(i, 0)).reverse()
    .find((e) => e.block === rec.playing?.block);
  if (next) play(next);
});
$("player").addEventListener("error", () => {
  $("player-caption").textContent = `cannot play ${rec.playing?.file}: ` +
    `${$("player").error?.message || "the browser refused it"} (it may have been deleted)`;
});
$("rec-block").addEventListener("change", () => {
  rec.block = $("rec-block").value;
  loadRecordings();
});
$("rec-newer").addEventListener("click", () => loadRecordings());
$("rec-older").addEventListener("click", () => loadRecordings(true));

async function pollRecordings() {
  if (!rec.paged) await loadRecordings();
  setTimeout(pollRecordings, REC_POLL_MS);
}

// -- events: the newest first, live (what changed since the last seq, once a second) ----

const EV_KEEP = 100;
const EV_POLL_MS = 1000;
const ev = { seq: null, list: new Map(), shown: null };

function fmtScore(v) { return typeof v === "number" ? v.toFixed(2) : "—"; }

async function pollEvents() {
  const params = new URLSearchParams({ limit: String(EV_KEEP) });
  if (ev.seq !== null) params.set("after", String(ev.seq));
  try {
    const resp = await fetch(`/api/events?${params}`, { cache: "no-store" });
    const body = await resp.json().catch(() => null);
    if (!resp.ok || !body?.ok) throw new Error(body?.error?.message || `HTTP ${resp.status}`);
    const result = body.result;
    const fresh = new Set();
    const first = ev.seq === null || result.seq < ev.seq;  // the first time, or a new store
    if (first) ev.list.clear();
    for (const e of result.events) {
      if (!ev.list.has(e.id)) fresh.add(e.id);
      ev.list.set(e.id, e);
    }
    ev.seq = result.more ? Math.max(...result.events.map((e) => e.seq)) : result.seq;
    if (first || fresh.size || result.events.length) drawEvents(first ? new Set() : fresh);
    if (!result.store) $("ev-message").textContent = "events are not kept: the store did not open";
    else if (ev.list.size) $("ev-message").textContent = "";
  } catch (err) {
    $("ev-message").textContent = `events: ${err.message}`;
  }
  setTimeout(pollEvents, EV_POLL_MS);
}

function drawEvents(fresh) {
  const sorted = [...ev.list.values()].sort((a, b) => b.start - a.start).slice(0, EV_KEEP);
  ev.list = new Map(sorted.map((e) => [e.id, e]));
  const open = sorted.filter((e) => e.active).length;
  $("ev-summary").textContent = sorted.length ? `${open} open · the last ${sorted.length}` : "";
  const list = $("ev-list");
  list.replaceChildren();
  for (const e of sorted) {
    const li = document.createElement("li");
    li.dataset.id = e.id;
    li.classList.toggle("active", e.active);
    li.classList.toggle("fresh", fresh.has(e.id));
    li.classList.toggle("shown", ev.shown === e.id);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = "";
    if (e.snapshot) img.src = snapshotUrl(e);
    li.appendChild(img);
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = `${e.block} · ${e.kind}`;
    li.appendChild(what);
    const score = document.createElement("span");
    score.className = "more";
    score.textContent = fmtScore(e.score);
    li.appendChild(score);
    const when = document.createElement("span");
    when.className = "when";
    const length = e.end === null ? "open" : `${(e.end - e.start).toFixed(1)} s`;
    when.textContent = `${new Date(e.start * 1000).toLocaleTimeString()} · ${length}` +
      (e.interrupted ? " (cut)" : "");
    li.appendChild(when);
    const clip = document.createElement("span");
    clip.className = "more";
    if (e.clips.length) {
      const a = document.createElement("a");
      a.href = "#";
      a.textContent = "clip";
      a.addEventListener("click", (event) => { event.preventDefault(); event.stopPropagation(); playClip(e); });
      clip.appendChild(a);
    }
    li.appendChild(clip);
    li.addEventListener("click", () => showEvent(e));
    list.appendChild(li);
  }
  if (!sorted.length) $("ev-message").textContent = "no events yet";
}

function snapshotUrl(e) { return `/events/${encodeURIComponent(e.id)}/snapshot.jpg`; }

function showEvent(e) {
  ev.shown = e.id;
  $("ev-view").hidden = !e.snapshot;
  if (e.snapshot) $("ev-snapshot").src = snapshotUrl(e);
  $("ev-caption").textContent = `${e.block} · ${e.kind} · ${new Date(e.start * 1000).toLocaleString()}` +
    ` · score ${fmtScore(e.score)}` + (e.data ? ` · ${JSON.stringify(e.data).slice(0, 160)}` : "");
  drawEvents(new Set());
  if (e.clips.length) playClip(e);
}

function playClip(e) {
  const c = e.clips[e.clips.length - 1];
  const file = c.path.split("/").pop();
  play({ block: c.recorder, file, start: c.start, duration: (c.end ?? c.start) - c.start });
  $("playback").scrollIntoView({ block: "nearest" });
}

// -- polling ---------------------------------------------------------------------------

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (resp.status === 401) { location.reload(); return; }  // the session ended: ask again
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const body = await resp.json();
    const status = body.result;
    const shape = JSON.stringify(nodes(status).map((b) => [b.name, b.inputs]));
    if (shape !== state.shape) { draw(status); state.shape = shape; drawPlots(); }
    state.status = status;
    if (state.selected === null && location.hash.length > 1) {
      select(decodeURIComponent(location.hash.slice(1)), false);
    }
    update(status);
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    $("summary").textContent = `the daemon does not answer (${err.message}); retrying…`;
  } finally {
    timer = setTimeout(poll, POLL_MS);
  }
}

poll();
pollHistory();
pollRecordings();
pollEvents();
