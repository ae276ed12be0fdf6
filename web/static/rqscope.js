// rqscope dashboard: confirmations for bulk and destructive forms, live refresh, keyboard shortcuts.
// Polling schedules the next request only after the previous one answered, and waits while the tab is hidden.
// Everything from Redis is put in the page with textContent and attributes, never parsed as HTML.
(function () {
  "use strict";
  var POLL_MS = 3000;
  var UNANSWERED = "The sidecar did not answer; retrying.";

  // ---- small DOM helpers -------------------------------------------------------------------------
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function setText(element, value) {
    var text = String(value);
    if (element && element.textContent !== text) { element.textContent = text; }
  }

  // a name as the page writes it (monitor.names.label): bytes that are not UTF-8 arrive in JSON as lone
  // surrogates U+DC80..U+DCFF and are shown as \xff escapes
  function label(name) {
    return name.replace(/[\uDC80-\uDCFF]/g, function (c) { return "\\x" + (c.charCodeAt(0) - 0xDC00).toString(16).padStart(2, "0"); });
  }

  // the page's Redis instance (<body data-redis>, set while one other than the default is shown): every request
  // this script makes carries it, whether or not the URL it was handed names it, so a poll never reads another one
  function scoped(url) {
    var instance = document.body.getAttribute("data-redis");
    if (!instance || url === null) { return url; }
    var cut = url.indexOf("#"), fragment = cut < 0 ? "" : url.slice(cut), rest = cut < 0 ? url : url.slice(0, cut);
    var mark = rest.indexOf("?"), params = new URLSearchParams(mark < 0 ? "" : rest.slice(mark + 1));
    if (params.get("redis") === instance) { return url; }
    params.set("redis", instance);  // the path is kept as written: a name's encoding must not be normalised
    return (mark < 0 ? rest : rest.slice(0, mark)) + "?" + params.toString() + fragment;
  }

  function plural(count, word) { return count.toLocaleString("en-US") + " " + word + (count === 1 ? "" : "s"); }

  // ---- times, as the server's `when`, `utc` and `duration` filters write them ---------------------
  function moment(value) {
    if (value === null || value === undefined || value === "") { return null; }
    var ms = typeof value === "number" ? value * 1000 : Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : value + "Z");
    return isNaN(ms) ? null : ms;
  }

  function when(ms) {
    var delta = (ms - Date.now()) / 1000, seconds = Math.abs(delta), units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    var amount = "0 s";
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][0] || units[i][1] === "s") { amount = Math.floor(seconds / units[i][0]) + " " + units[i][1]; break; }
    }
    return delta > 0 ? "in " + amount : amount + " ago";
  }

  function utc(ms) { return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC"; }

  function duration(started, ended) {
    var a = moment(started), b = moment(ended);
    if (a === null || b === null) { return ""; }
    var s = Math.max(0, (b - a) / 1000);
    if (s < 1) { return Math.round(s * 1000) + " ms"; }
    if (s < 60) { return s.toFixed(1) + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s"; }
    return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  }

  function timeNode(value) {
    var ms = moment(value);
    if (ms === null) { return null; }
    return el("time", { datetime: new Date(ms).toISOString(), title: utc(ms) }, when(ms));
  }

  function refreshTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (node) {
      var ms = moment(node.getAttribute("datetime"));
      if (ms !== null) { setText(node, when(ms)); }
    });
  }

  // ---- confirmations ---------------------------------------------------------------------------------
  function onSubmit(form) {
    form.addEventListener("submit", function (event) {
      var verb = form.getAttribute("data-confirm-selected");
      if (verb !== null) {
        var count = form.querySelectorAll("input[name=ids]:checked").length;
        if (count === 0) {
          event.preventDefault();
          window.alert("Select at least one job first.");
          return;
        }
        if (!window.confirm((verb || "Retry") + " " + count + " selected job" + (count === 1 ? "" : "s") + "?")) {
          event.preventDefault();
        }
        return;
      }
      var message = form.getAttribute("data-confirm");
      if (message && !window.confirm(message)) { event.preventDefault(); }
    });
  }

  function selectAll(table) {
    var all = table.querySelector("input[data-select-all]");
    if (!all) { return; }
    function boxes() { return table.querySelectorAll("tbody input[name=ids]"); }
    all.addEventListener("change", function () { boxes().forEach(function (box) { box.checked = all.checked; }); });
    table.addEventListener("change", function (event) {
      if (event.target === all) { return; }
      var list = Array.prototype.slice.call(boxes()), checked = list.filter(function (b) { return b.checked; }).length;
      all.checked = list.length > 0 && checked === list.length;
      all.indeterminate = checked > 0 && checked < list.length;
    });
  }

  // ---- polling ----------------------------------------------------------------------------------------
  function banner(message) {
    var node = document.getElementById("redis-banner");
    if (!message) {
      if (node) { node.remove(); }
      return;
    }
    if (!node) {
      node = el("div", { id: "redis-banner", "class": "banner error", role: "alert" });
      document.body.insertBefore(node, document.querySelector("main"));
    }
    setText(node, message);
  }

  function poll(url, apply) {
    function tick() {
      if (document.hidden) {  // nothing is fetched for a hidden tab; the next poll runs when it is shown
        document.addEventListener("visibilitychange", tick, { once: true });
        return;
      }
      fetch(scoped(url), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          // 503 means Redis is unreachable: the body still says so, and the banner shows it
          if (!response.ok && response.status !== 503) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          if (data.redis) {  // the snapshot's answers say whether Redis is up; the others only clear an unanswered poll
            banner(data.redis.up === false ? "Redis is unreachable; figures are stale until it answers." : "");
          } else if (document.getElementById("redis-banner") && document.getElementById("redis-banner").textContent === UNANSWERED) {
            banner("");
          }
          if (!data.error) { apply(data); }
        })
        .catch(function () { banner(UNANSWERED); })
        .then(function () { window.setTimeout(tick, POLL_MS); });
    }
    window.setTimeout(tick, POLL_MS);
  }

  // ---- overview ---------------------------------------------------------------------------------------
  function countContent(cell, state, count) {
    if (!count) { return el("span", { "data-count": state, "class": "zero" }, "0"); }
    var link = el("a", { href: scoped(cell.getAttribute("data-list-url")), "data-count": state });
    if (state === "failed") {
      link.className = "bad";
      link.title = plural(count, "failed job");
      link.appendChild(el("span", { "aria-hidden": "true" }, "⚠ "));
      link.appendChild(document.createTextNode(String(count)));
      link.appendChild(el("span", { "class": "sr-only" }, " failed"));
    } else {
      link.textContent = String(count);
    }
    return link;
  }

  function applyQueues(data) {
    var totals = data.totals || {};
    document.querySelectorAll("[data-total]").forEach(function (node) {
      var key = node.getAttribute("data-total");
      if (key in totals) { setText(node, totals[key]); }
    });
    var byName = {};
    (data.queues || []).forEach(function (queue) { byName[label(queue.name)] = queue; });
    document.querySelectorAll("tr[data-queue]").forEach(function (row) {
      var queue = byName[row.getAttribute("data-queue")];
      if (!queue) { return; }
      row.querySelectorAll("td[data-state]").forEach(function (cell) {
        var state = cell.getAttribute("data-state"), count = queue.counts[state];
        var shown = cell.querySelector("[data-count]");
        if (count === undefined || (shown && shown.textContent.replace(/\D/g, "") === String(count))) { return; }
        cell.replaceChildren(countContent(cell, state, count));
      });
      setText(row.querySelector("[data-latency]"), queue.latency_seconds.toFixed(1) + " s");
      setText(row.querySelector("[data-workers]"), queue.workers);
    });
  }

  function applyStats(data) {
    setText(document.querySelector("[data-stat=throughput]"), data.throughput.toFixed(2) + "/s");
    setText(document.querySelector("[data-stat=failure_ratio]"),
      data.failure_ratio === null ? "–" : (data.failure_ratio * 100).toFixed(1) + "%");
    var workers = document.querySelector("[data-stat=workers]");
    if (workers) {
      var parts = [document.createTextNode(data.workers.live + " live")];
      if (data.workers.dead) { parts.push(document.createTextNode(", "), el("span", { "class": "bad" }, data.workers.dead + " dead")); }
      if (workers.textContent !== parts.map(function (p) { return p.textContent; }).join("")) { workers.replaceChildren.apply(workers, parts); }
    }
  }

  // ---- workers ----------------------------------------------------------------------------------------
  function applyWorkers(table, data) {
    var staleAfter = parseFloat(table.getAttribute("data-stale-after")), byName = {}, unseen = 0;
    (data.workers || []).forEach(function (w) { byName[label(w.name)] = w; });
    var shown = {};
    table.querySelectorAll("tr[data-worker]").forEach(function (row) {
      var name = row.getAttribute("data-worker"), w = byName[name];
      shown[name] = true;
      var field = function (f) { return row.querySelector("[data-field=" + f + "]"); };
      if (!w) { row.classList.add("gone"); setText(field("state"), "gone"); return; }
      row.classList.toggle("dead", w.dead);
      var state = field("state");
      if (state.textContent !== (w.dead ? "dead" : w.state)) {
        state.replaceChildren(w.dead ? el("span", { "class": "bad" }, "dead") : document.createTextNode(w.state));
      }
      var job = field("current_job");
      if (job.textContent !== (w.current_job || "")) {
        job.replaceChildren();
        if (w.current_job) { job.appendChild(el("a", { href: scoped(table.getAttribute("data-job-url").replace("JOB_ID", encodeURIComponent(w.current_job))) }, w.current_job)); }
      }
      setText(field("current_job_seconds"), w.current_job ? w.current_job_seconds.toFixed(1) : "");
      var age = w.heartbeat_age_seconds, stale = age === null || age > staleAfter, beat = field("heartbeat");
      var text = age === null ? "never" : Math.round(age) + " s ago";
      if (beat.textContent !== text + (stale ? " stale" : "")) {
        beat.replaceChildren(document.createTextNode(text));
        if (stale) { beat.append(" ", el("span", { "class": "flag" }, "stale")); }
        beat.classList.toggle("stale", stale);
      }
      setText(field("rss"), w.rss_bytes === null ? "–" : (w.rss_bytes / 1048576).toFixed(1) + " MiB");
      setText(field("cpu"), w.cpu_seconds === null ? "–" : w.cpu_seconds.toFixed(1) + " s");
      setText(field("jobs"), w.successful_jobs + " / " + w.failed_jobs);
      setText(field("pool"), w.pool ? w.pool.in_use + "/" + w.pool.idle + "/" + w.pool.max : "–");
    });
    Object.keys(byName).forEach(function (name) { if (!shown[name]) { unseen += 1; } });
    var note = document.getElementById("workers-changed");
    if (unseen && !note) {
      note = el("p", { id: "workers-changed", "class": "warn", role: "status" });
      table.parentNode.insertBefore(note, table);
    }
    if (note) { setText(note, unseen ? plural(unseen, "worker") + " joined this page since it loaded; reload to see them." : ""); }
  }

  // ---- job lists --------------------------------------------------------------------------------------
  var liveForms = 0;

  function truncate(text, size) { return text.length > size ? text.slice(0, size - 3) + "..." : text; }

  function jobRow(table, job) {
    var state = table.getAttribute("data-state"), row = el("tr", { "data-job-id": job.id });
    if (table.hasAttribute("data-selectable")) {
      var cell = el("td");
      cell.appendChild(el("input", { type: "checkbox", name: "ids", value: job.id, "aria-label": "select " + job.id }));
      row.appendChild(cell);
    }
    var idCell = el("td");
    idCell.appendChild(el("a", { href: scoped(table.getAttribute("data-job-url").replace("JOB_ID", encodeURIComponent(job.id))) }, job.id));
    row.appendChild(idCell);
    row.appendChild(el("td", { "class": "desc", title: job.description }, truncate(job.description, 120)));
    if (state === "scheduled") {
      var due = el("td", { "class": "when", "data-scheduled-for": "" }), at = timeNode(job.scheduled_for);
      if (at) { due.appendChild(at); }
      var enqueueUrl = table.getAttribute("data-enqueue-url"), token = document.querySelector("#bulk-form input[name=csrf_token]");
      if (enqueueUrl && token) {
        var id = "enqueue-live-" + (liveForms += 1);
        var form = el("form", { id: id, method: "post", action: scoped(enqueueUrl.replace("JOB_ID", encodeURIComponent(job.id))), "data-confirm": "Enqueue job " + job.id + " now?" });
        form.appendChild(el("input", { type: "hidden", name: "csrf_token", value: token.value }));
        document.querySelector("main").appendChild(form);
        onSubmit(form);
        due.append(" ", el("button", { type: "submit", form: id }, "Enqueue now"));
      }
      row.appendChild(due);
    }
    ["enqueued_at", "ended_at"].forEach(function (name) {
      var cell = el("td", { "class": "when", "data-field": name }), node = timeNode(job[name]);
      if (node) { cell.appendChild(node); }
      row.appendChild(cell);
    });
    row.appendChild(el("td", { "class": "when", "data-field": "duration" }, duration(job.started_at, job.ended_at)));
    if (state === "failed") {
      row.appendChild(el("td", { "class": "exc" }, (job.exc_type || "") + (job.exc_message ? ": " + truncate(job.exc_message, 160) : "")));
    }
    return row;
  }

  function busy(table) {
    // the user is working in this list: a checked box or focus in a row stays exactly where it is
    return table.querySelector("tbody input:checked") !== null || table.querySelector("tbody").contains(document.activeElement);
  }

  function applyJobs(table, data) {
    setText(document.querySelector("[data-list-total]"), (data.total || 0).toLocaleString("en-US"));
    var body = table.querySelector("tbody");
    refreshTimes(body);
    if (busy(table)) { return; }
    var existing = {};
    body.querySelectorAll("tr[data-job-id]").forEach(function (row) { existing[row.getAttribute("data-job-id")] = row; });
    var rows = (data.jobs || []).map(function (job) { return existing[job.id] || jobRow(table, job); });
    var same = rows.length === body.children.length && rows.every(function (row, i) { return body.children[i] === row; });
    if (same) { return; }
    if (!rows.length) {
      var empty = el("tr", { "data-empty": "" }), cell = el("td", { colspan: "8" }, "No jobs here.");
      empty.appendChild(cell);
      rows = [empty];
    }
    body.replaceChildren.apply(body, rows);
  }

  // ---- keyboard ---------------------------------------------------------------------------------------
  var SHORTCUTS = [["/", "search: the list's text filter, else the job id box"], ["j / k", "next / previous row"],
    ["Enter", "open the selected row"], ["?", "show or hide this help"], ["Esc", "close this help, leave a field"]];

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function listRows() {
    return Array.prototype.filter.call(document.querySelectorAll("main table.grid tbody tr"), function (row) {
      return row.querySelector("a[href]") !== null && row.offsetParent !== null;
    });
  }

  function move(step) {
    var rows = listRows(), current = document.querySelector("tr.kb-selected"), index = rows.indexOf(current);
    if (!rows.length) { return; }
    index = index < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, index + step));
    if (current) { current.classList.remove("kb-selected"); current.removeAttribute("aria-current"); }
    rows[index].classList.add("kb-selected");
    rows[index].setAttribute("aria-current", "true");
    rows[index].scrollIntoView({ block: "nearest" });
  }

  function help() {
    var dialog = document.getElementById("shortcuts");
    if (!dialog) {
      dialog = el("dialog", { id: "shortcuts", "aria-labelledby": "shortcuts-title" });
      dialog.appendChild(el("h2", { id: "shortcuts-title" }, "Keyboard shortcuts"));
      var list = el("dl", { "class": "fields" });
      SHORTCUTS.forEach(function (pair) {
        var term = el("dt");
        term.appendChild(el("kbd", {}, pair[0]));
        list.append(term, el("dd", {}, pair[1]));
      });
      dialog.appendChild(list);
      var close = el("button", { type: "button" }, "Close");
      close.addEventListener("click", function () { dialog.close(); });
      dialog.appendChild(close);
      // focus may stay on the closed dialog's button, where Enter would open nothing: hand it back to the page
      dialog.addEventListener("close", function () {
        if (dialog.contains(document.activeElement)) { document.activeElement.blur(); }
      });
      document.body.appendChild(dialog);
    }
    if (dialog.open) { dialog.close(); } else { dialog.showModal(); }
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) { return; }
    if (typing(event.target)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var open = document.getElementById("shortcuts");
    if (open && open.open && event.key !== "?") { return; }  // the modal help handles its own keys (Esc closes)
    if (event.key === "/") {
      var search = document.querySelector("main form.filters input[name=q]") || document.getElementById("job-search");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
    } else if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      move(event.key === "j" ? 1 : -1);
    } else if (event.key === "Enter") {
      var selected = document.querySelector("tr.kb-selected a[href]"), active = document.activeElement;
      // a closed dialog's button keeps the focus until its close event has run: it is no control then
      var onControl = active && !active.closest("dialog:not([open])") && /^(A|BUTTON)$/.test(active.tagName);
      if (selected && !onControl) { event.preventDefault(); window.location.assign(selected.href); }
    } else if (event.key === "?") {
      event.preventDefault();
      help();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm], form[data-confirm-selected]").forEach(onSubmit);
    document.querySelectorAll("table[data-live=jobs]").forEach(selectAll);
    document.addEventListener("keydown", onKey);
    var url = document.body.getAttribute("data-poll-url");
    if (url && document.querySelector("[data-total], tr[data-queue]")) { poll(url, applyQueues); }
    var stats = document.querySelector("[data-stat][data-live-url]");
    if (stats) { poll(stats.getAttribute("data-live-url"), applyStats); }
    document.querySelectorAll("table[data-live-url]").forEach(function (table) {
      var kind = table.getAttribute("data-live");
      poll(table.getAttribute("data-live-url"), function (data) {
        if (kind === "workers") { applyWorkers(table, data); } else if (kind === "jobs") { applyJobs(table, data); }
      });
    });
  });
})();
