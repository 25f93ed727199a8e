// Boxes that scroll (a wide table in its .table-scroll box, a long command output) must be
// reachable from the keyboard, or someone without a mouse cannot read what is past the edge
// (WCAG 2.1.1; axe's scrollable-region-focusable, found at phone width by
// tests/browser/test_accessibility.py). While a box scrolls it becomes a named region in the Tab
// order; when it fits again (a wider window) it leaves the Tab order, so wide screens keep no
// useless stops. Boxes the page adds later (live updates) are watched too.
(function () {
  "use strict";
  var SELECTOR = ".table-scroll, pre.output";

  function nameOf(box) {
    var caption = box.querySelector("caption");
    var section = box.closest("section, article, details, fieldset");
    var heading = section && section.querySelector("h1, h2, h3, h4, summary, legend");
    var what = (caption || heading || {}).textContent || "";
    what = what.replace(/\s+/g, " ").trim();
    var kind = box.tagName === "PRE" ? "Output" : "Table";
    return (what ? kind + ": " + what : kind) + " (scrolls)";
  }

  function update(box) {
    var scrolls = box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1;
    if (scrolls && !box.hasAttribute("tabindex")) {
      box.setAttribute("tabindex", "0");
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", nameOf(box));
      box.dataset.scrollRegion = "auto";
    } else if (!scrolls && box.dataset.scrollRegion === "auto") {
      box.removeAttribute("tabindex");
      box.removeAttribute("role");
      box.removeAttribute("aria-label");
      delete box.dataset.scrollRegion;
    }
  }

  var resized = "ResizeObserver" in window ? new ResizeObserver(function (entries) {
    entries.forEach(function (e) { update(e.target); });
  }) : null;

  function watch(root) {
    var boxes = root.matches && root.matches(SELECTOR) ? [root] : [];
    if (root.querySelectorAll) boxes = boxes.concat(Array.prototype.slice.call(root.querySelectorAll(SELECTOR)));
    boxes.forEach(function (box) {
      update(box);
      if (resized) resized.observe(box);
    });
  }

  watch(document);
  // Content changes (output streaming into a box, rows added) change whether it scrolls.
  new MutationObserver(function (records) {
    records.forEach(function (r) {
      r.addedNodes.forEach(function (n) { if (n.nodeType === 1) watch(n); });
      var box = r.target.nodeType === 1 ? r.target.closest(SELECTOR) : r.target.parentElement && r.target.parentElement.closest(SELECTOR);
      if (box) update(box);
    });
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
  if (!resized) window.addEventListener("resize", function () { watch(document); });
})();
