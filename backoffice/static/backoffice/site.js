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

// Dependent choices: when the province or district changes, refresh the district and ward
// suggestions from the administrative maps. Without this, they narrow after a submit.
(function () {
  "use strict";
  var form = document.getElementById("register-form");
  if (!form || !window.fetch) { return; }
  var url = form.getAttribute("data-divisions");
  var province = document.getElementById("id_province");
  var district = document.getElementById("id_district");
  function fill(id, names) {
    var list = document.getElementById(id);
    while (list.firstChild) { list.removeChild(list.firstChild); }
    names.forEach(function (name) {
      var option = document.createElement("option");
      option.value = name;
      list.appendChild(option);
    });
  }
  function refresh() {
    var query = "?province=" + encodeURIComponent(province.value) + "&district=" + encodeURIComponent(district.value);
    window.fetch(url + query, {credentials: "same-origin"}).then(function (answer) {
      return answer.ok ? answer.json() : null;
    }).then(function (data) {
      if (data) { fill("districts", data.districts); fill("wards", data.wards); }
    }).catch(function () { /* the server-side lists stay */ });
  }
  province.addEventListener("change", refresh);
  district.addEventListener("change", refresh);
})();
