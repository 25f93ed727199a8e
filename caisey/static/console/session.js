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
  function refresh(id) {
    fetch(location.pathname + "actions/" + id + "/", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
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
  document.addEventListener("caisey:prompt.state", function () {
    // Prompt cards carry their whole history: re-render the page from the ledger.
    if (!reloadSoon) reloadSoon = setTimeout(function () { location.reload(); }, 400);
  });
  ["caisey:action.status", "caisey:action.queued"].forEach(function (name) {
    document.addEventListener(name, function (e) { refresh(e.detail.payload.action_id); });
  });
})();
