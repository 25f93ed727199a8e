// Bulk results: subscribe to every row's session and reload (throttled) as results fill in.
(function () {
  "use strict";
  var pending = null;
  document.addEventListener("caisey:socket-open", function (e) {
    document.querySelectorAll("[data-session]").forEach(function (el) {
      e.detail.send(JSON.stringify({subscribe: "session", id: el.dataset.session}));
    });
  });
  ["caisey:action.status", "caisey:action.output"].forEach(function (name) {
    document.addEventListener(name, function () {
      if (pending) return;
      pending = setTimeout(function () { location.reload(); }, 1500);
    });
  });
})();
