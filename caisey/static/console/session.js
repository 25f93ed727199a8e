// Session page: subscribe to this session's doorbells; append output as it streams and
// re-render an action's card when its status changes. The page itself is the record.
(function () {
  "use strict";
  var page = document.querySelector("[data-live=session]");
  if (!page) return;
  var sessionId = page.dataset.session;
  document.addEventListener("caisey:socket-open", function (e) {
    e.detail.send(JSON.stringify({subscribe: "session", id: sessionId}));
  });
  function card(id) { return document.getElementById("action-" + id); }
  // Fetches for one card may answer out of order (dispatched, running, succeeded in quick
  // succession): only the newest request for a card may replace it.
  var requested = {};
  // X-Caisey-Live: a refresh the page made on its own, not the person's activity (the idle
  // timeout of endpoints/identity.py ignores it).
  // A fetch that fails (the server busy or restarting, the network thin) is tried again a few
  // times while it is still the newest for its card: a missed update would leave a card wrong.
  function refresh(id, tries) {
    var n = requested[id] = (requested[id] || 0) + 1;
    tries = tries || 0;
    function again() { if (n === requested[id] && tries < 4) setTimeout(function () { refresh(id, tries + 1); }, 1000 * (tries + 1)); }
    fetch(location.pathname + "actions/" + id + "/", {credentials: "same-origin", headers: {"X-Caisey-Live": "1"}})
      .then(function (r) { return r.ok ? r.text() : null; }, function () { return null; })
      .then(function (html) {
        if (!html) { again(); return; }
        if (n !== requested[id]) return;
        var holder = document.createElement("div");
        holder.innerHTML = html.trim();
        var fresh = holder.firstElementChild;
        var old = card(id);
        if (old) { old.replaceWith(fresh); } else {
          var none = document.getElementById("no-actions");
          if (none) none.remove();
          document.getElementById("actions").appendChild(fresh);
        }
      });
  }
  document.addEventListener("caisey:action.output", function (e) {
    var p = e.detail.payload, c = card(p.action_id);
    if (!c) { refresh(p.action_id); return; }
    c.querySelector("[data-field=output]").textContent += p.data;
  });
  // Prompt cards (templates/console/_prompt.html) are re-rendered from the ledger one by one,
  // like action cards: on their own doorbell, and when the endpoint's presence changes (a
  // prompt held by an endpoint that went to sleep says so; back again, its live state).
  function promptCard(id) { return document.getElementById("prompt-" + id); }
  var promptRequested = {};
  function refreshPrompt(id) {
    var n = promptRequested[id] = (promptRequested[id] || 0) + 1;
    fetch(location.pathname + "prompts/" + id + "/", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || n !== promptRequested[id]) return;
        var holder = document.createElement("div");
        holder.innerHTML = html.trim();
        var fresh = holder.firstElementChild;
        var old = promptCard(id);
        if (old) { old.replaceWith(fresh); } else {
          var none = document.getElementById("no-prompts");
          if (none) none.remove();
          document.getElementById("prompt-list").prepend(fresh);
        }
      });
  }
  document.addEventListener("caisey:prompt.state", function (e) { refreshPrompt(e.detail.payload.prompt_id); });
  document.addEventListener("caisey:endpoint.presence", function () {
    document.querySelectorAll("#prompt-list [data-watch-presence]").forEach(function (p) {
      refreshPrompt(p.dataset.prompt);
    });
  });
  // Doorbells rung between rendering this page and subscribing to the session are not
  // replayed (an action that finished in that gap would stay "Queued"). Once subscribed,
  // compare with a fresh render and refresh the cards that differ.
  function resync() {
    fetch(location.pathname, {credentials: "same-origin", headers: {"X-Caisey-Live": "1"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        fresh.querySelectorAll("#prompt-list [data-prompt]").forEach(function (c) {
          var old = promptCard(c.dataset.prompt);
          if (!old || old.dataset.state !== c.dataset.state || old.dataset.condition !== c.dataset.condition) {
            refreshPrompt(c.dataset.prompt);
          }
        });
        fresh.querySelectorAll("#actions [data-action]").forEach(function (c) {
          var old = card(c.dataset.action);
          if (!old || old.dataset.status !== c.dataset.status) refresh(c.dataset.action);
        });
      }, function () {});
  }
  document.addEventListener("caisey:message", function (e) {
    if (e.detail && e.detail.subscribed === "session") resync();
  });
  // A doorbell is not the record and can be lost (a layer restart, a full channel): while an
  // action on this page is still live, compare with the server now and then as well, so a
  // card never stays "Running" after its action ended.
  var LIVE = ["queued", "dispatched", "running", "awaiting_approval"];
  setInterval(function () {
    if (document.hidden || document.body.dataset.live !== "connected") return;
    var live = Array.prototype.some.call(document.querySelectorAll("#actions [data-action]"), function (c) {
      return LIVE.indexOf(c.dataset.status) >= 0;
    });
    if (live) resync();
  }, 10000);
  ["caisey:action.status", "caisey:action.queued"].forEach(function (name) {
    document.addEventListener(name, function (e) { refresh(e.detail.payload.action_id); });
  });
})();
