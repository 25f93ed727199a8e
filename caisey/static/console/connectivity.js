// Connectivity on the endpoint and session pages, live: live.js puts the endpoint.presence payload
// (state, reason, since) on the badge; when the state or its reason changes, this re-reads the page
// and swaps what depends on it: the parts marked data-connectivity-region (the read-only or
// degraded banner, the run form's heading and button, the machine's last known state) and the cards
// of actions in flight ("endpoint unreachable since ..."). Forms keep what was typed in them.
(function () {
  "use strict";
  var page = document.querySelector("[data-live=endpoint][data-endpoint], [data-live=session][data-endpoint]");
  if (!page) return;
  var endpointId = page.dataset.endpoint;
  function shownIn(doc) {
    var badge = doc.querySelector("#connectivity-now [data-field=presence]");
    return {state: badge ? badge.textContent.trim() : "", reason: badge ? badge.title : ""};
  }
  var shown = shownIn(document);
  var LIVE = ["queued", "dispatched", "running"];

  function swapRegions(fresh) {
    document.querySelectorAll("[data-connectivity-region][id]").forEach(function (old) {
      var now = fresh.getElementById(old.id);
      if (now && now.outerHTML !== old.outerHTML) old.replaceWith(document.importNode(now, true));
    });
    fresh.querySelectorAll("#actions [data-action]").forEach(function (card) {
      var old = document.getElementById(card.id);
      if (!old || (LIVE.indexOf(old.dataset.status) < 0 && LIVE.indexOf(card.dataset.status) < 0)) return;
      if (old.outerHTML !== card.outerHTML) old.replaceWith(document.importNode(card, true));
    });
  }

  var reread = window.caiseyRereader(function (fresh) {
    swapRegions(fresh);
    shown = shownIn(fresh);
    page.dataset.connectivity = shown.state;
    document.dispatchEvent(new CustomEvent("caisey:connectivity-shown", {detail: shown}));
    settleWaking();
  });

  // Waking is a passing state: the agent applies the new cadence within a heartbeat or two. A
  // doorbell for that can be missed (seen in CI: a session page rendered "waking" 0.9 s before the
  // agent applied the wake, its socket subscribed after, and it showed "waking" for 30 s), so while
  // the page shows it, it also looks again every few seconds, for a bounded while.
  var wakingChecks = 0;
  var wakingTimer = null;
  function settleWaking() {
    if (shown.state !== "waking") { wakingChecks = 0; return; }
    if (wakingTimer || wakingChecks >= 40) return;
    wakingChecks += 1;
    wakingTimer = setTimeout(function () { wakingTimer = null; reread(); }, 3000);
  }
  settleWaking();

  // Doorbells rung between rendering this page and subscribing are not replayed (a session page
  // rendered "waking" just before the agent applied the wake would stay so): re-read once subscribed.
  document.addEventListener("caisey:message", function (e) {
    if (e.detail && e.detail.subscribed === "endpoint") reread();
  });
  document.addEventListener("caisey:endpoint.presence", function (e) {
    var p = e.detail.payload;
    if (!p || p.id !== endpointId) return;
    var state = p.state || p.presence;
    if (state === shown.state && (p.reason || "") === shown.reason) return;
    shown = {state: state, reason: p.reason || ""};
    page.dataset.connectivity = state;
    reread();
  });
})();
