// tryon pages: live try-on progress (polling) and the before/after slider. No dependencies.
(function () {
  "use strict";
  var TERMINAL = { succeeded: 1, failed: 1, canceled: 1 };

  function poll(section) {
    var url = section.getAttribute("data-poll-url");
    var bar = section.querySelector("progress");
    function field(name) { return section.querySelector('[data-field="' + name + '"]'); }
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (job) {
          field("status").textContent = job.status;
          field("stage").textContent = job.stage;
          field("percent").textContent = job.progress;
          bar.value = job.progress;
          bar.textContent = job.progress + " %";
          if (TERMINAL[job.status]) { window.location.reload(); return; }
          window.setTimeout(tick, 1000);
        })
        .catch(function () {
          field("note").textContent = "Lost contact with the server; retrying.";
          window.setTimeout(tick, 3000);
        });
    }
    window.setTimeout(tick, 500);
  }

  function compare(range) {
    var box = range.previousElementSibling;  // the label
    while (box && !box.hasAttribute("data-compare")) { box = box.previousElementSibling; }
    if (!box) { return; }
    var after = box.querySelector("[data-compare-after]");
    function apply() { after.style.width = range.value + "%"; }
    range.addEventListener("input", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-poll-url]"), poll);
    Array.prototype.forEach.call(document.querySelectorAll("[data-compare-range]"), compare);
  });
})();
