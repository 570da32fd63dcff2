// Progressive enhancement only: every form works without this file.
// The OTP countdown: counts down the seconds the server rendered.
(function () {
  "use strict";
  var el = document.getElementById("countdown");
  if (!el) { return; }
  var left = parseInt(el.getAttribute("data-seconds"), 10) || 0;
  var template = el.getAttribute("data-template");
  var done = el.getAttribute("data-done");
  function show() {
    if (left <= 0) { el.textContent = done; return; }
    el.textContent = template.replace("{m}", String(Math.floor(left / 60))).replace("{s}", String(left % 60));
    left -= 1;
    window.setTimeout(show, 1000);
  }
  show();
})();
