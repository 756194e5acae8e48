// The sweep dashboard: one script for the live page (served by serve) and the offline report (data inlined).
//
// Live: trials load in pages from /trials, then /events (server-sent events) says when something changed and the
// page fetches the trials touched since the last seq it holds (/trials?changed_since=SEQ). No polling. Charts are
// redrawn with Plotly.react, at most every MIN_RENDER_MS (longer for big sweeps), so 10,000 trials stay usable.
(() => {
  "use strict";
  const PAGE = 2000;           // trials per /trials request while loading
  const TABLE_ROWS = 100;      // table rows shown per page
  const REFRESH_DELAY = 150;   // coalesce a burst of events into one fetch
  const PARCOORDS_LINES = 1000; // the best this many: more are a solid block of colour, and slow to draw without a GPU
  const LOG_SCALE = new Set(["log_normal", "uniform_pow2"]);
  const TERMINAL = new Set(["completed", "failed", "stopped"]);
  const CONFIG = { responsive: true, displaylogo: false };
  const embedded = window.SWEEP_DATA || null; // the offline report: {summary, trials}

  const rows = new Map(); // trial number -> record (the newest by seq)
  let summary = null;
  let held = 0;           // every event up to this seq is reflected in rows
  let sortKey = "trial", sortDir = 1, tablePage = 0;
  let renderTimer = null, lastRender = 0, refreshTimer = null, fetching = false, again = false;
  let source = null;
  const timings = {};  // milliseconds each view took to draw, the last time (for benchmarks/dashboard.py)
  let renders = 0;
  let outcomes = 0, drawnOutcomes = -1; // the charts of completed trials are redrawn only when an outcome changed
  window.sweepDashboard = { timings, renders: () => renders };

  const $ = (id) => document.getElementById(id);
  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const short = (run) => { const i = run.lastIndexOf("trial_"); return i >= 0 ? run.slice(i) : run; };
  const fmt = (v) => (v === null || v === undefined ? "" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4).replace(/\.?0+(e|$)/, "$1")) : String(v));
  const better = (a, b) => (summary.goal === "minimize" ? a < b : a > b);

  function merge(list) {
    for (const r of list) {
      const old = rows.get(r.trial);
      if (old && r.seq < old.seq) continue;
      if (!old || old.status !== r.status || old.score !== r.score || old.cost !== r.cost) outcomes += 1;
      rows.set(r.trial, r);
    }
  }

  async function getJSON(url) {
    const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res.json();
  }

  // -- loading and following ---------------------------------------------------------------------------------
  async function load() {
    if (embedded) {
      summary = embedded.summary;
      merge(embedded.trials);
      renderNow();
      setConnection(`report written ${embedded.generated_at}`);
      return ready();
    }
    let offset = 0, first = null;
    for (;;) {
      const page = await getJSON(`trials?offset=${offset}&limit=${PAGE}`);
      if (first === null) first = page.summary.last_seq;
      summary = page.summary;
      merge(page.trials);
      offset += page.trials.length;
      if (page.trials.length < PAGE) break;
      drawText([...rows.values()].sort((a, b) => a.trial - b.trial)); // the table fills in; charts once, at the end
      timings["table usable (ms from navigation)"] ??= Math.round(performance.now());
    }
    held = first;
    await refresh(); // whatever changed while the pages loaded
    renderNow();
    ready();
    follow();
  }

  function follow() {
    if (summary.finished) return setConnection("sweep finished");
    source = new EventSource(`events?since=${held}`);
    source.onopen = () => setConnection("live");
    source.onmessage = (m) => {
      const { seq, event } = JSON.parse(m.data);
      if (seq <= held) return;
      outcome(seq, event);
      scheduleRefresh();
    };
    source.addEventListener("lagging", scheduleRefresh);
    source.onerror = () => setConnection("reconnecting to serve…");
  }

  // A trial's outcome and the sweep's end are applied straight from the stream: serve exits moments after the
  // sweep finishes, maybe before the fetch that follows. The fetched record (seq at least as new) replaces it.
  function outcome(seq, event) {
    const row = rows.get(event.trial);
    if (event.type === "SweepFinished") {
      summary = { ...summary, finished: true, best_trial: event.best_trial };
    } else if (!row && event.type === "TrialSuggested") {
      // A trial newer than the last fetch: known from here on, so its outcome is not lost if serve exits first.
      rows.set(event.trial, { trial: event.trial, run: event.run, status: "suggested", params: flatten(event.params),
        score: null, cost: null, reason: null, seq, curve: [], reports: [] });
    } else if (row && row.seq < seq && (event.type === "TrialCompleted" || event.type === "TrialFailed")) {
      const done = event.type === "TrialCompleted";
      rows.set(event.trial, { ...row, seq, status: done ? "completed" : "failed", score: done ? event.score : null,
        cost: done ? event.cost : null, reason: done ? null : event.reason, curve: [], reports: [] });
      outcomes += 1;
    } else if (row && row.seq < seq && event.type === "TrialStopped") {
      rows.set(event.trial, { ...row, seq, status: "stopped", score: event.score, cost: event.cost,
        stop_step: event.step, curve: [], reports: [] });
      outcomes += 1;
    } else {
      return;
    }
    scheduleRender();
  }

  function flatten(params, prefix = "", out = {}) {
    for (const [k, v] of Object.entries(params || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
      else out[`${prefix}${k}`] = v;
    }
    return out;
  }

  function scheduleRefresh() {
    if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, REFRESH_DELAY);
  }

  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      do {
        again = false;
        const page = await getJSON(`trials?changed_since=${held}`);
        // A reply asked for before the stream said the sweep finished may be older than that news: keep it.
        const ended = summary.finished ? { finished: true, best_trial: summary.best_trial } : {};
        summary = { ...page.summary, ...ended };
        merge(page.trials);
        held = Math.max(held, page.summary.last_seq);
        scheduleRender();
      } while (again);
    } catch (err) {
      setConnection(`cannot read trials: ${err.message}`);
    } finally {
      fetching = false;
    }
    if (summary.finished && source) { source.close(); source = null; setConnection("sweep finished"); }
  }

  function setConnection(text) { $("connection").textContent = text; }

  function ready() {
    document.body.dataset.ready = "1";
    document.body.dataset.readyMs = String(Math.round(performance.now()));
  }

  // -- drawing -----------------------------------------------------------------------------------------------
  function scheduleRender() {
    if (renderTimer) return;
    const interval = Math.max(250, rows.size / 10); // 1 s at 10,000 trials
    const wait = Math.max(0, lastRender + interval - performance.now());
    renderTimer = setTimeout(() => { renderTimer = null; renderNow(); }, wait);
  }

  function renderNow() {
    lastRender = performance.now();
    const all = [...rows.values()].sort((a, b) => a.trial - b.trial);
    const done = all.filter((r) => r.status === "completed" && r.score !== null);
    const names = paramNames(all);
    timed("table", () => drawText(all));
    timed("curves", () => drawCurves(all));
    if (outcomes !== drawnOutcomes) {
      drawnOutcomes = outcomes;
      timed("history", () => drawHistory(done));
      timed("pareto", () => drawPareto(done));
      timed("importance", () => drawImportance(done, names));
      timed("parcoords", () => drawParcoords(done, names));
    }
    renders += 1;
    document.body.dataset.trials = String(all.length);
    document.body.dataset.seq = String(held);
  }

  function timed(name, draw) {
    const t = performance.now();
    draw();
    timings[name] = Math.round(performance.now() - t);
  }

  function drawText(all) {
    drawHeadline(all);
    drawTable(all, paramNames(all));
  }

  function paramNames(all) {
    const names = new Set(Object.keys(summary.parameters || {}));
    for (const r of all) for (const k of Object.keys(r.params)) names.add(k);
    return [...names];
  }

  function drawHeadline(all) {
    document.title = `Sweep ${summary.sweep}`;
    $("title").textContent = `Sweep ${summary.sweep}`;
    const best = summary.best_trial !== null ? rows.get(summary.best_trial) : null;
    const phase = summary.finished ? "finished" : "in progress";
    const max = summary.max_trials ? ` of ${summary.max_trials}` : "";
    const count = (status) => all.filter((r) => r.status === status).length;
    let text = `${phase}: ${all.length}${max} trials, ${count("completed")} completed, ${count("failed")} failed`;
    if (count("stopped")) text += `, ${count("stopped")} stopped early`;
    const running = all.filter((r) => !TERMINAL.has(r.status)).length;
    if (running) text += `, ${running} in flight`;
    if (best) text += ` · best ${short(best.run)}: ${summary.metric} ${fmt(best.score)} (${summary.goal})`;
    $("headline").textContent = text;
  }

  const byScore = (a, b) => (better(a.score, b.score) ? -1 : better(b.score, a.score) ? 1 : a.trial - b.trial);

  function drawHistory(done) {
    // The best so far as a step line: its corners (each improvement) and the last trial.
    const steps = [];
    for (const r of done) if (!steps.length || better(r.score, steps[steps.length - 1].score)) steps.push(r);
    if (done.length && steps[steps.length - 1] !== done[done.length - 1]) steps.push({ ...done[done.length - 1], score: steps[steps.length - 1].score });
    Plotly.react($("history"), [
      { type: "scattergl", mode: "markers", name: "trial", x: done.map((r) => r.trial), y: done.map((r) => r.score),
        text: done.map((r) => short(r.run)), marker: { size: 6, color: "#3b82f6" } },
      { type: "scatter", mode: "lines", name: "best so far", x: steps.map((r) => r.trial), y: steps.map((r) => r.score),
        line: { shape: "hv", color: "#dc2626" } },
    ], layout({ xaxis: { title: { text: "trial" } }, yaxis: { title: { text: summary.metric } } }), CONFIG);
  }

  function paretoFront(points) {
    // Protein's front: by cost (cheapest first, the better score first among equal costs), each trial whose score
    // beats every cheaper one.
    const sorted = [...points].sort((a, b) => a.cost - b.cost || (better(a.score, b.score) ? -1 : better(b.score, a.score) ? 1 : 0));
    const front = [];
    for (const r of sorted) if (!front.length || better(r.score, front[front.length - 1].score)) front.push(r);
    return front;
  }

  function drawPareto(done) {
    const pts = done.filter((r) => r.cost !== null);
    const front = paretoFront(pts);
    const costs = pts.map((r) => r.cost).filter((c) => c > 0);
    const logX = costs.length === pts.length && costs.length > 1 && Math.max(...costs) / Math.min(...costs) > 50;
    Plotly.react($("pareto"), [
      { type: "scattergl", mode: "markers", name: "trial", x: pts.map((r) => r.cost), y: pts.map((r) => r.score),
        text: pts.map((r) => short(r.run)), marker: { size: 6, color: "#94a3b8" } },
      { type: "scatter", mode: "lines+markers", name: "Pareto front", x: front.map((r) => r.cost),
        y: front.map((r) => r.score), text: front.map((r) => short(r.run)), line: { shape: "hv", color: "#dc2626" },
        marker: { size: 8, color: "#dc2626" } },
    ], layout({ xaxis: { title: { text: "cost" }, type: logX ? "log" : "linear" }, yaxis: { title: { text: summary.metric } } }), CONFIG);
  }

  // -- importance: |Spearman rho| (numeric) or the correlation ratio eta of score ranks (categorical) ----------
  function ranks(values) {
    const order = values.map((v, i) => [v, i]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const out = new Array(values.length);
    for (let i = 0; i < order.length;) {
      let j = i;
      while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
      for (let k = i; k <= j; k++) out[order[k][1]] = (i + j) / 2 + 1; // ties share their mean rank
      i = j + 1;
    }
    return out;
  }

  function pearson(a, b) {
    const n = a.length, ma = a.reduce((s, v) => s + v, 0) / n, mb = b.reduce((s, v) => s + v, 0) / n;
    let sab = 0, saa = 0, sbb = 0;
    for (let i = 0; i < n; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) ** 2; sbb += (b[i] - mb) ** 2; }
    return saa && sbb ? sab / Math.sqrt(saa * sbb) : 0;
  }

  function correlationRatio(groups, y) {
    const mean = y.reduce((s, v) => s + v, 0) / y.length, by = new Map();
    groups.forEach((g, i) => { const e = by.get(g) || [0, 0]; e[0] += y[i]; e[1] += 1; by.set(g, e); });
    let between = 0, total = 0;
    for (const [sum, n] of by.values()) between += n * (sum / n - mean) ** 2;
    for (const v of y) total += (v - mean) ** 2;
    return total ? Math.sqrt(between / total) : 0;
  }

  function importance(done, names) {
    const out = [];
    for (const name of names) {
      const have = done.filter((r) => r.params[name] !== undefined && r.params[name] !== null);
      if (have.length < 3) continue;
      const values = have.map((r) => r.params[name]);
      const scoreRanks = ranks(have.map((r) => r.score));
      const categorical = (summary.parameters[name] || {}).distribution === "categorical" || values.some((v) => typeof v !== "number");
      const value = categorical ? correlationRatio(values.map(String), scoreRanks) : Math.abs(pearson(ranks(values), scoreRanks));
      out.push({ name, value });
    }
    return out.sort((a, b) => a.value - b.value);
  }

  function drawImportance(done, names) {
    const imp = importance(done, names);
    Plotly.react($("importance"), [
      { type: "bar", orientation: "h", x: imp.map((d) => d.value), y: imp.map((d) => d.name), marker: { color: "#3b82f6" },
        hovertemplate: "%{y}: %{x:.3f}<extra></extra>" },
    ], layout({ xaxis: { title: { text: "importance (|Spearman ρ| or η)" }, range: [0, 1] }, margin: { l: 140, r: 20, t: 10, b: 45 }, showlegend: false,
      annotations: imp.length ? [] : [note("needs 3 completed trials")] }), CONFIG);
  }

  // -- parallel coordinates, with log axes for log-scale parameters ------------------------------------------
  function axis(name, values) {
    const space = summary.parameters[name] || {};
    const numeric = values.every((v) => typeof v === "number");
    if (space.distribution === "categorical" || !numeric) {
      const choices = space.choices || [...new Set(values.map(String))].sort();
      const labels = choices.map(String);
      return { label: name, values: values.map((v) => labels.indexOf(String(v))), tickvals: labels.map((_, i) => i), ticktext: labels };
    }
    const lo = Math.min(...values, space.min ?? Infinity), hi = Math.max(...values, space.max ?? -Infinity);
    if (LOG_SCALE.has(space.distribution) && lo > 0) {
      const base = space.distribution === "uniform_pow2" ? 2 : 10;
      const ticks = [];
      for (let k = Math.ceil(Math.log(lo) / Math.log(base) - 1e-9); k <= Math.floor(Math.log(hi) / Math.log(base) + 1e-9); k++) ticks.push(base ** k);
      if (ticks.length < 2) ticks.splice(0, ticks.length, lo, hi);
      return { label: `${name} (log)`, values: values.map(Math.log10), range: [Math.log10(lo), Math.log10(hi)],
        tickvals: ticks.map(Math.log10), ticktext: ticks.map(tickLabel) };
    }
    return { label: name, values, range: [lo, hi] };
  }

  function tickLabel(v) {
    return v > 0 && (v < 1e-3 || v >= 1e5) ? v.toExponential(0).replace("e+", "e") : fmt(v);
  }

  function drawParcoords(all, names) {
    const done = all.length <= PARCOORDS_LINES ? all : [...all].sort(byScore).slice(0, PARCOORDS_LINES);
    $("parcoords-shown").textContent = done.length < all.length
      ? `The best ${done.length.toLocaleString("en")} of ${all.length.toLocaleString("en")} completed trials`
      : "Completed trials";
    const dims = [];
    for (const name of names) {
      const values = done.map((r) => r.params[name]);
      if (values.length && values.every((v) => v !== undefined && v !== null)) dims.push(axis(name, values));
    }
    const scores = done.map((r) => r.score);
    dims.push({ label: summary.metric, values: scores });
    Plotly.react($("parcoords"), [
      { type: "parcoords", dimensions: dims,
        line: { color: scores, colorscale: "Viridis", reversescale: summary.goal === "minimize", showscale: true,
          colorbar: { title: { text: summary.metric } } } },
    ], layout({ margin: { l: 70, r: 70, t: 50, b: 20 } }), CONFIG);
  }

  function drawCurves(all) {
    const running = all.filter((r) => !TERMINAL.has(r.status) && ((r.curve && r.curve.length) || (r.reports && r.reports.length)));
    const traces = [];
    for (const r of running) {
      if (r.curve && r.curve.length) traces.push({ type: "scatter", mode: "lines+markers", name: `${short(r.run)} ${r.job || ""}`,
        x: r.curve.map((p) => p[0]), y: r.curve.map((p) => p[1]), xaxis: "x", yaxis: "y" });
      if (r.reports && r.reports.length) traces.push({ type: "scatter", mode: "lines+markers", name: `${short(r.run)} reports`,
        x: r.reports.map((p) => p[0]), y: r.reports.map((p) => p[1]), xaxis: "x2", yaxis: "y2" });
    }
    const reports = traces.some((t) => t.xaxis === "x2");
    Plotly.react($("curves"), traces, layout({
      xaxis: { title: { text: "seconds since the job started" }, domain: reports ? [0, 0.47] : [0, 1] },
      yaxis: { title: { text: "step" } },
      xaxis2: { title: { text: "step" }, domain: [0.53, 1], anchor: "y2", visible: reports },
      yaxis2: { title: { text: `intermediate ${summary.metric}` }, anchor: "x2", visible: reports },
      annotations: traces.length ? [] : [note("no trial is running")],
    }), CONFIG);
  }

  function layout(extra) {
    return Object.assign({ margin: { l: 60, r: 20, t: 10, b: 45 }, showlegend: true, legend: { orientation: "h", y: -0.25 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff", font: { size: 11 }, uirevision: "keep" }, extra);
  }

  function note(text) {
    return { text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 13, color: "#5b6475" } };
  }

  // -- the trial table: sortable, a page at a time ------------------------------------------------------------
  function columns(names) {
    return [
      { key: "trial", label: "trial", get: (r) => r.trial },
      { key: "status", label: "status", get: (r) => (r.status === "stopped" && r.stop_step != null ? `stopped at ${fmt(r.stop_step)}` : r.status), text: true },
      ...names.map((n) => ({ key: `p:${n}`, label: n, get: (r) => r.params[n] })),
      { key: "score", label: summary.metric, get: (r) => r.score },
      { key: "cost", label: "cost", get: (r) => r.cost },
      { key: "runtime", label: "runtime (s)", get: (r) => r.train_seconds + r.eval_seconds },
      { key: "reason", label: "reason", get: (r) => r.reason, text: true },
    ];
  }

  function compare(get) {
    return (a, b) => {
      const x = get(a), y = get(b);
      if (x === y) return a.trial - b.trial;
      if (x === null || x === undefined) return 1; // missing values last, either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    };
  }

  let lastAll = [], lastNames = [];
  function drawTable(all, names) {
    lastAll = all; lastNames = names;
    const cols = columns(names);
    const col = cols.find((c) => c.key === sortKey) || cols[0];
    const sorted = [...all].sort(compare(col.get));
    const pages = Math.max(1, Math.ceil(sorted.length / TABLE_ROWS));
    tablePage = Math.min(tablePage, pages - 1);
    const shown = sorted.slice(tablePage * TABLE_ROWS, (tablePage + 1) * TABLE_ROWS);
    $("trials").tHead.innerHTML = "<tr>" + cols.map((c) =>
      `<th data-key="${esc(c.key)}" class="${c.text ? "text " : ""}${c.key === col.key ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(c.label)}</th>`).join("") + "</tr>";
    $("trials").tBodies[0].innerHTML = shown.map((r) =>
      `<tr class="${r.trial === summary.best_trial ? "best" : ""}">` + cols.map((c) => {
        const v = c.get(r), cls = [c.text ? "text" : "", c.key === "status" ? `status-${esc(r.status)}` : "", c.key === "reason" ? "reason" : ""].join(" ");
        return `<td class="${cls}"${c.key === "reason" && v ? ` title="${esc(v)}"` : ""}>${esc(c.key === "trial" ? short(r.run) : fmt(v))}</td>`;
      }).join("") + "</tr>").join("");
    $("pageinfo").textContent = `${sorted.length ? tablePage * TABLE_ROWS + 1 : 0}–${tablePage * TABLE_ROWS + shown.length} of ${sorted.length}`;
    $("prev").disabled = tablePage === 0;
    $("next").disabled = tablePage >= pages - 1;
  }

  function wireTable() {
    $("trials").tHead.addEventListener("click", (e) => {
      const th = e.target.closest("th");
      if (!th) return;
      if (th.dataset.key === sortKey) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
      tablePage = 0;
      drawTable(lastAll, lastNames);
    });
    $("prev").addEventListener("click", () => { tablePage -= 1; drawTable(lastAll, lastNames); });
    $("next").addEventListener("click", () => { tablePage += 1; drawTable(lastAll, lastNames); });
  }

  // WebGL charts cost most the first time they draw (without a GPU, seconds for parallel coordinates): set them
  // up while the trials load.
  function prepareCharts() {
    const blank = { margin: { t: 10 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
    Plotly.newPlot($("history"), [{ type: "scattergl", mode: "markers", x: [], y: [] }], blank, CONFIG);
    Plotly.newPlot($("pareto"), [{ type: "scattergl", mode: "markers", x: [], y: [] }], blank, CONFIG);
    Plotly.newPlot($("parcoords"), [{ type: "parcoords", dimensions: [{ label: " ", values: [0] }] }], blank, CONFIG);
  }

  document.addEventListener("DOMContentLoaded", () => {
    wireTable();
    const loading = load();
    if (!embedded) timed("prepare", prepareCharts); // the report has its data at hand: nothing to overlap
    loading.catch((err) => setConnection(`cannot load the sweep: ${err.message}`));
  });
})();
