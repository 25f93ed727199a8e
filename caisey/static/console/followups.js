// The follow-up reminder, live: when the reminder sweep finds one of the signed-in technician's
// follow-ups due, the nav's count goes up and the status line says which, without a reload
// (on the pages that keep a console socket open: live.js). The page reloaded shows the same count.
(function () {
  "use strict";
  var link = document.querySelector("[data-follow-ups-for]");
  if (!link) return;
  document.addEventListener("caisey:follow_up.due", function (e) {
    var p = e.detail.payload || {};
    if (p.assigned_to !== link.dataset.followUpsFor) return;
    var badge = link.querySelector("[data-field=follow-ups-due]");
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.field = "follow-ups-due";
      link.append(" ", badge);
    }
    badge.textContent = ((parseInt(badge.textContent, 10) || 0) + 1) + " due";
    var status = document.getElementById("live-status");
    if (status) status.textContent = "Follow-up due on " + p.hostname + (p.note ? ": " + p.note : "") + ".";
  });
})();
