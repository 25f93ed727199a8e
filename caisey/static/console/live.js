// Re-reading this page (connectivity.js, overview.js, bulk.js): caiseyRereader(onFresh) returns a
// function that fetches the page again and hands the parsed document to onFresh; an answer
// overtaken by a newer re-read is dropped.
window.caiseyRereader = function (onFresh) {
  "use strict";
  var latest = 0;
  return function () {
    var n = latest += 1;
    fetch(location.pathname, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || n !== latest) return;  // a newer re-read is on its way
        onFresh(new DOMParser().parseFromString(html, "text/html"));
      });
  };
};

// Live doorbells from /ws/console/. The page is rendered from the database; the socket only
// tells it what changed. Reconnects with backoff; after a reconnect it reloads to catch up,
// because doorbells missed while disconnected are not replayed (the layer is at-most-once).
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  var endpointPage = document.querySelector("[data-live=endpoint], [data-live=session]");
  var attempts = 0;
  var everConnected = false;

  function applyPresence(p) {
    // One payload shape for connectivity (bridge.health.Connectivity): state, reason, since.
    var state = p.state || p.presence;
    var scope = document.querySelectorAll('[data-endpoint="' + p.id + '"]');
    scope.forEach(function (el) {
      var presence = el.querySelector('[data-field=presence]');
      if (presence) {
        presence.textContent = state;
        presence.className = "presence presence-" + state;
        presence.title = p.reason || "";
      }
      var reason = el.querySelector('[data-field=connectivity_reason]');
      if (reason) reason.textContent = p.reason || "";
      var since = el.querySelector('[data-field=connectivity_since]');
      if (since) {
        since.parentElement.hidden = !p.since;
        if (p.since) window.caiseyTimes.set(since, p.since);
      }
      var seen = el.querySelector('[data-field=last_seen]');
      if (seen && p.last_seen) window.caiseyTimes.set(seen, p.last_seen);
    });
    if (scope.length === 0 && document.querySelector("[data-live=tenant]")) {
      status.textContent = "A new endpoint appeared: " + p.hostname + ". Reload to see it.";
    }
  }

  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + location.host + "/ws/console/");
    ws.onopen = function () {
      if (everConnected) { location.reload(); return; }
      everConnected = true;
      attempts = 0;
      document.body.dataset.live = "connected";
      if (endpointPage) ws.send(JSON.stringify({subscribe: "endpoint", id: endpointPage.dataset.endpoint}));
      document.dispatchEvent(new CustomEvent("caisey:socket-open", {detail: {send: function (m) { ws.send(m); }}}));
    };
    ws.onmessage = function (e) {
      var msg = JSON.parse(e.data);
      if (msg.event === "endpoint.presence") applyPresence(msg.payload);
      document.dispatchEvent(new CustomEvent("caisey:" + (msg.event || "message"), {detail: msg}));
    };
    ws.onclose = function () {
      document.body.dataset.live = "disconnected";
      status.textContent = "Live updates paused; reconnecting…";
      attempts += 1;
      var delay = Math.min(30000, 500 * Math.pow(2, attempts)) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }
  connect();
})();

// Kind pickers: show only the chosen diagnostic's parameters (all are shown without JS).
(function () {
  "use strict";
  document.querySelectorAll("[data-kind-select]").forEach(function (select) {
    var picker = select.closest(".kind-picker");
    function sync() {
      picker.querySelectorAll("fieldset.params").forEach(function (fs) {
        var on = fs.dataset.kind === select.value;
        fs.hidden = !on;
        fs.disabled = !on;
      });
    }
    select.addEventListener("change", sync);
    sync();
  });
})();
