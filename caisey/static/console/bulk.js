// A bulk run's page, live: each bulk.progress event for this run (rung as its actions end or
// cannot be delivered) moves the progress bar at once and, at most every 1.5 s, re-reads the page
// to swap the results grouped by outcome; open drill-downs stay open. The live region says it.
(function () {
  "use strict";
  var page = document.querySelector("[data-live=bulk][data-bulk-run]");
  if (!page) return;
  var runId = page.dataset.bulkRun;
  var status = document.getElementById("live-status");
  var timer = null;
  function openGroups() {
    var open = {};
    document.querySelectorAll("[data-outcome] details[open]").forEach(function (d) {
      open[d.closest("[data-outcome]").dataset.outcome] = true;
    });
    return open;
  }
  var fetchPage = window.caiseyRereader(function (fresh) {
    ["bulk-progress", "bulk-outcomes"].forEach(function (id) {
      var now = fresh.getElementById(id);
      var old = document.getElementById(id);
      if (!now || !old || now.outerHTML === old.outerHTML) return;
      var open = openGroups();
      var node = document.importNode(now, true);
      node.querySelectorAll("[data-outcome]").forEach(function (s) {
        var d = s.querySelector("details");
        if (d && open[s.dataset.outcome]) d.open = true;
      });
      old.replaceWith(node);
    });
    var summary = document.querySelector("[data-field=outcome-summary]");
    if (summary && summary.textContent.trim()) status.textContent = "Results: " + summary.textContent.trim();
  });
  function reread() {
    timer = null;
    fetchPage();
  }
  document.addEventListener("caisey:bulk.progress", function (e) {
    var p = e.detail.payload || {};
    if (p.bulk_run_id !== runId) return;
    var bar = document.querySelector("[data-field=bulk-progress-bar]");
    var text = document.querySelector("[data-field=bulk-progress-text]");
    if (bar && typeof p.total === "number") {
      bar.max = p.total;
      bar.value = p.done;
      bar.textContent = p.total ? Math.round(100 * p.done / p.total) + "%" : "100%";
    }
    if (text && typeof p.total === "number") {
      text.innerHTML = "";
      var strong = document.createElement("strong");
      strong.textContent = p.done + " of " + p.total;
      text.appendChild(strong);
      text.appendChild(document.createTextNode(" finished · " + p.waiting + " waiting for their endpoint"));
    }
    if (!timer) timer = setTimeout(reread, 1500);
  });
  document.addEventListener("caisey:socket-open", function () { if (!timer) timer = setTimeout(reread, 1500); });
})();
