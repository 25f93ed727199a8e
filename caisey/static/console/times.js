// Times as people read them: every <time data-relative> shows "3 min ago" / "in 2 h", its title
// the full date-time in the technician's zone (body data-time-zone, the zone the server rendered
// the page in). The rules are caisey/templatetags/times.py's; keep the two in step. Live pages
// keep the texts fresh (every 15 s), and live.js fills times from events with caiseyTimes.set.
(function () {
  "use strict";
  var UNITS = [[60, 1, "s"], [3600, 60, "min"], [86400, 3600, "h"], [30 * 86400, 86400, "d"]];
  var zone = document.body.dataset.timeZone || undefined;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function parts(date, options) {
    var out = {};
    new Intl.DateTimeFormat("en-GB", Object.assign({timeZone: zone}, options)).formatToParts(date)
      .forEach(function (p) { out[p.type] = p.value; });
    return out;
  }

  function relative(date, now) {
    var seconds = (date.getTime() - (now || Date.now())) / 1000;
    var distance = Math.abs(seconds);
    if (distance < 5) return "just now";
    for (var i = 0; i < UNITS.length; i++) {
      if (distance < UNITS[i][0]) {
        var n = Math.floor(distance / UNITS[i][1]);
        return seconds > 0 ? "in " + n + " " + UNITS[i][2] : n + " " + UNITS[i][2] + " ago";
      }
    }
    var d = parts(date, {year: "numeric", month: "2-digit", day: "2-digit"});
    return "on " + d.year + "-" + d.month + "-" + d.day;
  }

  function absolute(date) {
    var p = parts(date, {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    });
    var text = p.year + "-" + p.month + "-" + p.day + " " + pad(+p.hour) + ":" + p.minute + ":" + p.second;
    var abbreviation = p.timeZoneName || "";
    return text + " " + abbreviation + (zone && zone !== abbreviation ? " (" + zone + ")" : "");
  }

  function refresh(root) {
    (root || document).querySelectorAll("time[data-relative][datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (!isNaN(date)) el.textContent = relative(date);
    });
  }

  window.caiseyTimes = {
    relative: relative,
    absolute: absolute,
    refresh: refresh,
    // A time from a live event: relative text, absolute title, kept fresh from then on.
    set: function (el, iso) {
      var date = new Date(iso);
      if (isNaN(date)) return;
      el.setAttribute("datetime", iso);
      el.setAttribute("data-relative", "");
      el.title = absolute(date);
      el.textContent = relative(date);
    },
  };
  setInterval(refresh, 15000);
})();
