// The fleet overview, live: live.js puts each endpoint.presence payload on the rows it names;
// this re-reads the page and swaps the overview (counts by connectivity, the endpoints needing
// attention) when an endpoint's connectivity changes or a bulk run moves, at most every 2 s.
// Prompts and sessions ring only their own session's pages, so the overview also re-reads every
// 15 s while it is visible. What changed is said in the page's live region (#live-status).
(function () {
  "use strict";
  var page = document.querySelector("[data-live=overview]");
  if (!page) return;
  var status = document.getElementById("live-status");
  var timer = null;
  function summary(doc) {
    var el = doc.querySelector("[data-field=overview-summary]");
    return el ? el.textContent.replace(/\s+/g, " ").trim() : "";
  }
  var fetchPage = window.caiseyRereader(function (fresh) {
    var now = fresh.getElementById("overview-now");
    var old = document.getElementById("overview-now");
    if (!now || !old) return;
    var before = summary(document);
    if (now.outerHTML !== old.outerHTML) old.replaceWith(document.importNode(now, true));
    var after = summary(document);
    if (after !== before) status.textContent = "Fleet updated: " + after;
    document.dispatchEvent(new CustomEvent("caisey:overview-shown"));
  });
  function reread() {
    timer = null;
    fetchPage();
  }
  function soon() { if (!timer) timer = setTimeout(reread, 2000); }
  document.addEventListener("caisey:endpoint.presence", soon);
  document.addEventListener("caisey:bulk.progress", soon);
  document.addEventListener("caisey:socket-open", soon);
  setInterval(function () { if (!document.hidden) soon(); }, 15000);
})();
