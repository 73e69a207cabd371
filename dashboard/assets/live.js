// latentsweep dashboard: live fragment refresh over server-sent events and the epoch slider.
// Everything works without this script; it only avoids full reloads.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var dot = document.getElementById("live");
  var busy = false, again = false, sliderSeq = 0;

  function withParam(href, k, v) {
    var u = new URL(href, location.href);
    u.searchParams.set(k, v);
    return u.toString();
  }

  async function refresh() {
    if (busy) { again = true; return; }
    var main = document.querySelector("main");
    // Do not yank a form out from under the user.
    if (!main || main.contains(document.activeElement) && document.activeElement.tagName !== "BODY" && document.activeElement.tagName !== "A") { return; }
    busy = true;
    try {
      var r = await fetch(withParam(location.href, "fragment", "1"), { headers: { "Accept": "text/html" } });
      if (r.ok) {
        var html = await r.text();
        if (main.innerHTML !== html) { main.innerHTML = html; }
      }
    } catch (e) { /* offline: try on the next event */ }
    busy = false;
    if (again) { again = false; refresh(); }
  }

  if (window.EventSource && document.body.dataset.live) {
    var es = new EventSource("/events");
    es.addEventListener("hello", function () { if (dot) dot.classList.add("on"); });
    es.addEventListener("change", refresh);
    es.onerror = function () { if (dot) dot.classList.remove("on"); };
  }

  document.addEventListener("input", async function (ev) {
    var el = ev.target;
    if (!(el instanceof HTMLInputElement) || el.name !== "epoch" || !el.form || !el.form.classList.contains("epoch-form")) return;
    var params = new URLSearchParams(new FormData(el.form));
    var out = document.getElementById("epoch-value");
    if (out) out.textContent = el.value;
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    params.set("fragment", "grid");
    var mine = ++sliderSeq;
    try {
      var r = await fetch(location.pathname + "?" + params.toString());
      if (!r.ok || mine !== sliderSeq) return;
      var html = await r.text();
      var grid = document.getElementById("latent-grid");
      if (grid && mine === sliderSeq) grid.innerHTML = html;
      document.querySelectorAll(".epoch-links a").forEach(function (a) {
        a.classList.toggle("current", a.textContent === el.value);
      });
    } catch (e) { /* keep the current picture */ }
  });
})();
