// rqscope charts: draws each <figure data-chart> with the vendored uPlot from its JSON series, keeps
// its data table current, refreshes live charts while the tab is visible, and switches windows.
// Polling schedules the next request only after the previous one answered.
(function () {
  "use strict";
  var OUTCOMES = ["success", "failure", "retried", "timeout", "killed"];
  var LIGHT = { success: "#047857", failure: "#b91c1c", retried: "#b45309", timeout: "#7c3aed", killed: "#374151",
    p50: "#1d4ed8", p95: "#b45309", p99: "#b91c1c", line: "#1d4ed8", axis: "#374151", grid: "#e5e7eb" };
  var DARK = { success: "#34d399", failure: "#f87171", retried: "#fbbf24", timeout: "#a78bfa", killed: "#d1d5db",
    p50: "#60a5fa", p95: "#fbbf24", p99: "#f87171", line: "#60a5fa", axis: "#d1d5db", grid: "#374151" };
  var dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var charts = [];

  function palette() { return dark && dark.matches ? DARK : LIGHT; }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(epoch, step) {
    var d = new Date(epoch * 1000);
    var hm = pad(d.getUTCHours()) + ":" + (step < 3600 ? pad(d.getUTCMinutes()) : "00");
    return step < 3600 ? hm : pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + hm;
  }

  function cell(v) { return v === null || v === undefined ? "–" : String(v); }

  // kind -> how its series becomes uPlot data and a table; the Python twin is web/charts.py table()
  var KINDS = {
    "runs": { unit: "runs/s", axis: "runs per second", names: OUTCOMES, values: function (d) { return OUTCOMES.map(function (o) { return d.outcomes[o]; }); },
      columns: OUTCOMES.map(function (o) { return o + " (runs/s)"; }) },
    "queue-depth": { unit: "jobs", dots: true, axis: "queued jobs", names: ["queued"], values: function (d) { return [d.queued]; }, columns: ["Queued (jobs)"] },
    "queue-latency": { unit: "s", dots: true, axis: "latency (s)", names: ["latency"], values: function (d) { return [d.latency_seconds]; }, columns: ["Latency (s)"] },
    "task-quantiles": { unit: "s", dots: true, axis: "run time (s)", names: ["p50", "p95", "p99"],
      values: function (d) { return [d.quantiles_seconds.p50, d.quantiles_seconds.p95, d.quantiles_seconds.p99]; },
      columns: ["p50 (s)", "p95 (s)", "p99 (s)"] },
    "task-failure": { unit: "%", dots: true, axis: "failed runs (%)", names: ["failure %"], values: function (d) { return [d.failure_percent]; },
      columns: ["Runs", "Failure %"], extra: function (d) { return [d.runs]; } },
    "task-histogram": { unit: "runs", names: ["runs"], histogram: true }
  };

  function tableRows(kind, data) {
    var spec = KINDS[kind];
    if (spec.histogram) {
      return { columns: ["Duration ≤ (s)", "Runs"], rows: data.histogram.le.map(function (le, i) { return [le, cell(data.histogram.count[i])]; }) };
    }
    var values = (spec.extra ? spec.extra(data) : []).concat(spec.values(data));
    var rows = data.t.map(function (t, i) {
      return [when(t, data.step_seconds)].concat(values.map(function (v) { return cell(v[i]); }));
    });
    return { columns: ["Time (UTC)"].concat(spec.columns), rows: rows.slice(-60) };
  }

  function fillTable(figure, kind, data) {
    var table = figure.querySelector("table.chart-table");
    if (!table) { return; }
    var built = tableRows(kind, data);
    var body = document.createElement("tbody");
    built.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (value) {
        var td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
  }

  function shortBound(le) {
    if (le === "+Inf") { return "+Inf"; }
    var seconds = parseFloat(le);
    if (seconds < 1) { return Math.round(seconds * 1000) + "ms"; }
    return seconds < 60 ? seconds + "s" : seconds / 60 + "min";
  }

  function numbers(self, ticks) {
    return ticks.map(function (v) { return v === null ? "" : String(+v.toPrecision(4)); });
  }

  function timeTicks(step) {
    return function (self, ticks) {
      var span = ticks.length > 1 ? ticks[ticks.length - 1] - ticks[0] : 0;
      return ticks.map(function (t) { return when(t, span > 86400 ? 3600 : 60); });
    };
  }

  function options(figure, kind, data) {
    var spec = KINDS[kind];
    var colors = palette();
    var axisStyle = { stroke: colors.axis, grid: { stroke: colors.grid, width: 1 }, ticks: { stroke: colors.grid } };
    var width = Math.max(280, figure.clientWidth - 8);
    var opts = { width: width, height: 220, legend: { live: true }, cursor: { drag: { x: false, y: false } },
      scales: { y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } } };
    if (spec.histogram) {
      var labels = data.histogram.le;
      opts.scales.x = { time: false, range: function () { return [-0.5, labels.length - 0.5]; } };
      var every = width / labels.length < 44 ? 2 : 1;  // every other bound when they would overlap
      opts.axes = [
        Object.assign({ label: "run time ≤", values: function (u, ticks) {
          return ticks.map(function (i) { return labels[i] === undefined || i % every ? "" : shortBound(labels[i]); });
        },
          splits: function () { return labels.map(function (_, i) { return i; }); } }, axisStyle),
        Object.assign({ label: "runs", values: numbers }, axisStyle)
      ];
      opts.series = [{ label: "run time ≤", value: function (u, i) { return i === null ? "–" : shortBound(labels[i]); } },
        { label: "runs", value: function (u, v) { return v === null || v === undefined ? "–" : String(v); }, stroke: colors.line, fill: colors.line + "55", paths: uPlot.paths.bars({ size: [0.8, 60] }), points: { show: false } }];
      return opts;
    }
    var step = data.step_seconds;
    opts.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); };
    opts.axes = [Object.assign({ label: "Time (UTC)", values: timeTicks(step), space: 70 }, axisStyle),
      Object.assign({ label: spec.axis, values: numbers, size: 56 }, axisStyle)];
    opts.series = [{ label: "time (UTC)", value: function (u, ts) { return ts === null ? "–" : when(ts, step); } }].concat(spec.names.map(function (name) {
      var color = colors[name] || colors.line;
      return { label: name, stroke: color, width: 2, spanGaps: false,
        points: spec.dots ? { show: true, size: data.t.length > 200 ? 3 : 6, fill: color, stroke: color } : {},
        value: function (u, v) { return v === null || v === undefined ? "–" : (+v.toPrecision(4)) + (spec.unit === "%" ? "%" : " " + spec.unit); } };
    }));
    return opts;
  }

  function plotData(kind, data) {
    if (KINDS[kind].histogram) {
      return [data.histogram.le.map(function (_, i) { return i; }), data.histogram.count];
    }
    return [data.t].concat(KINDS[kind].values(data));
  }

  function draw(chart, data) {
    var figure = chart.figure;
    var plot = figure.querySelector(".plot");
    var shape = chart.kind + ":" + (data.histogram ? data.histogram.le.length : data.step_seconds) + ":" + (dark && dark.matches);
    if (chart.plot && chart.shape === shape) {
      chart.plot.setData(plotData(chart.kind, data));
    } else {
      if (chart.plot) { chart.plot.destroy(); }
      chart.plot = new uPlot(options(figure, chart.kind, data), plotData(chart.kind, data), plot);
      chart.shape = shape;
    }
    chart.data = data;
    figure.setAttribute("data-points", String(data.t ? data.t.length : data.histogram.le.length));
    fillTable(figure, chart.kind, data);
  }

  function source(chart) {
    var url = new URL(chart.figure.getAttribute("data-src"), window.location.href);
    url.searchParams.set("window", chart.window);  // the source may already name its instance (?redis=)
    return url.pathname + url.search;
  }

  function load(chart) {
    var url = source(chart);
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (source(chart) !== url) { return; }  // the window changed while this was on its way
        draw(chart, data);
        chart.figure.removeAttribute("data-error");
        var link = chart.figure.querySelector("[data-json-link]");
        if (link) { link.setAttribute("href", url); }
      })
      .catch(function (error) { chart.figure.setAttribute("data-error", String(error)); });
  }

  function liveMs(chart) {
    var ms = parseInt(chart.figure.getAttribute("data-live") || "0", 10);
    // hour bins change slowly: a minute between refreshes is enough
    return chart.window === "24h" || chart.window === "7d" ? Math.max(ms, 60000) : ms;
  }

  function schedule(chart) {
    var ms = liveMs(chart);
    if (!ms) { return; }
    window.clearTimeout(chart.timer);
    chart.timer = window.setTimeout(function tick() {
      if (document.visibilityState === "hidden") { chart.paused = true; return; }  // resumed on visibilitychange
      load(chart).then(function () { schedule(chart); });
    }, ms);
  }

  function liveState() {
    var node = document.querySelector("[data-live-state]");
    if (node) { node.textContent = document.visibilityState === "hidden" ? "paused" : "live"; }
  }

  function switchWindow(name) {
    document.querySelectorAll("[data-window-choice]").forEach(function (link) {
      if (link.getAttribute("data-window-choice") === name) { link.setAttribute("aria-current", "true"); }
      else { link.removeAttribute("aria-current"); }
    });
    charts.forEach(function (chart) {
      chart.window = name;
      chart.figure.setAttribute("data-window", name);
      load(chart).then(function () { schedule(chart); });
    });
    if (window.history && window.history.replaceState) {
      var here = new URL(window.location.href);
      here.searchParams.set("window", name);  // the page's other parameters (its instance) stay
      window.history.replaceState(null, "", here.pathname + here.search);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof uPlot === "undefined") { return; }  // the tables stay as the page drew them
    document.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      var chart = { figure: figure, kind: figure.getAttribute("data-chart"), window: figure.getAttribute("data-window") };
      if (!KINDS[chart.kind]) { return; }
      charts.push(chart);
      load(chart).then(function () { schedule(chart); });
    });
    document.querySelectorAll("[data-window-choice]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        switchWindow(link.getAttribute("data-window-choice"));
      });
    });
    document.addEventListener("visibilitychange", function () {
      liveState();
      if (document.visibilityState !== "visible") { return; }
      charts.forEach(function (chart) {
        if (chart.paused) { chart.paused = false; load(chart).then(function () { schedule(chart); }); }
      });
    });
    if (dark && dark.addEventListener) {
      dark.addEventListener("change", function () { charts.forEach(function (chart) { if (chart.data) { draw(chart, chart.data); } }); });
    }
    window.addEventListener("resize", function () {
      charts.forEach(function (chart) {
        if (chart.plot) { chart.plot.setSize({ width: Math.max(280, chart.figure.clientWidth - 8), height: 220 }); }
      });
    });
    liveState();
  });
})();
