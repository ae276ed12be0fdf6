// rqscope dashboard: confirmations for bulk and destructive forms, and live refresh of counts.
// Polling schedules the next request only after the previous one answered.
(function () {
  "use strict";
  var POLL_MS = 3000;

  function onSubmit(form) {
    form.addEventListener("submit", function (event) {
      var selected = form.getAttribute("data-confirm-selected");
      if (selected !== null) {
        var count = form.querySelectorAll("input[name=ids]:checked").length;
        if (count === 0) {
          event.preventDefault();
          window.alert("Select at least one job first.");
          return;
        }
        if (!window.confirm("Retry " + count + " selected job" + (count === 1 ? "" : "s") + "?")) {
          event.preventDefault();
        }
        return;
      }
      var message = form.getAttribute("data-confirm");
      if (message && !window.confirm(message)) {
        event.preventDefault();
      }
    });
  }

  function setText(element, value) {
    var text = String(value);
    if (element.textContent !== text) {
      element.textContent = text;
    }
  }

  function banner(message) {
    var node = document.getElementById("redis-banner");
    if (!message) {
      if (node) { node.remove(); }
      return;
    }
    if (!node) {
      node = document.createElement("div");
      node.id = "redis-banner";
      node.className = "banner error";
      node.setAttribute("role", "alert");
      document.body.insertBefore(node, document.querySelector("main"));
    }
    setText(node, message);
  }

  function apply(data) {
    banner(data.redis && data.redis.up === false ? "Redis is unreachable; figures are stale until it answers." : "");
    var totals = data.totals || {};
    document.querySelectorAll("[data-total]").forEach(function (node) {
      var key = node.getAttribute("data-total");
      if (key in totals) { setText(node, totals[key]); }
    });
    (data.queues || []).forEach(function (queue) {
      document.querySelectorAll("tr[data-queue]").forEach(function (row) {
        if (row.getAttribute("data-queue") !== queue.name) { return; }
        row.querySelectorAll("[data-count]").forEach(function (cell) {
          var state = cell.getAttribute("data-count");
          if (state in queue.counts) { setText(cell, queue.counts[state]); }
        });
      });
    });
  }

  function poll(url) {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        // 503 means Redis is unreachable: the body still says so, and apply() shows that banner
        if (!response.ok && response.status !== 503) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(apply)
      .catch(function () { banner("The sidecar did not answer; retrying."); })
      .then(function () { window.setTimeout(function () { poll(url); }, POLL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm], form[data-confirm-selected]").forEach(onSubmit);
    var url = document.body.getAttribute("data-poll-url");
    if (url && document.querySelector("[data-total], tr[data-queue]")) {
      window.setTimeout(function () { poll(url); }, POLL_MS);
    }
  });
})();
