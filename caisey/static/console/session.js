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
  function refresh(id) {
    var n = requested[id] = (requested[id] || 0) + 1;
    fetch(location.pathname + "actions/" + id + "/", {credentials: "same-origin", headers: {"X-Caisey-Live": "1"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || n !== requested[id]) return;
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
  var reloadSoon = null;
  function reload() {
    if (!reloadSoon) reloadSoon = setTimeout(function () { location.reload(); }, 400);
  }
  document.addEventListener("caisey:prompt.state", function () {
    // Prompt cards carry their whole history: re-render the page from the ledger.
    reload();
  });
  // Doorbells rung between rendering this page and subscribing to the session are not
  // replayed (an action that finished in that gap would stay "Queued"). Once subscribed,
  // compare with a fresh render: refresh the action cards that differ, reload for prompts.
  function promptStates(doc) {
    return Array.prototype.map.call(doc.querySelectorAll("#prompts [data-prompt]"), function (p) {
      var state = p.querySelector("[data-field=state]");
      return p.dataset.prompt + ":" + (state ? state.className : "");
    }).join(" ");
  }
  document.addEventListener("caisey:message", function (e) {
    if (!e.detail || e.detail.subscribed !== "session") return;
    fetch(location.pathname, {credentials: "same-origin", headers: {"X-Caisey-Live": "1"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        if (promptStates(fresh) !== promptStates(document)) { reload(); return; }
        fresh.querySelectorAll("#actions [data-action]").forEach(function (c) {
          var old = card(c.dataset.action);
          if (!old || old.dataset.status !== c.dataset.status) refresh(c.dataset.action);
        });
      });
  });
  ["caisey:action.status", "caisey:action.queued"].forEach(function (name) {
    document.addEventListener(name, function (e) { refresh(e.detail.payload.action_id); });
  });
})();
