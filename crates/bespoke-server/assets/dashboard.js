// Draws every `.chart[data-src]` of a dashboard page with uPlot, from its JSON endpoint
// ({"x": [unix seconds, or counts when "time" is false], "time", "series": [{"label", "values"}]}). A served file, not an inline
// script: the dashboard's Content-Security-Policy allows scripts from its own origin only.
(function () {
  "use strict";
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
  // Counts and durations go on a second axis, so that metrics between 0 and 1 stay legible.
  var right = { "training seconds": true, "decisions": true };

  function size(el) {
    return { width: Math.max(el.clientWidth, 260), height: 240 };
  }

  function draw(el) {
    fetch(el.getAttribute("data-src"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        if (!data.x.length || !data.series.length) {
          el.textContent = "No data yet.";
          el.setAttribute("data-drawn", "empty");
          return;
        }
        var twoAxes = data.series.some(function (s) { return right[s.label]; }) &&
          data.series.some(function (s) { return !right[s.label]; });
        var series = [{}].concat(data.series.map(function (s, i) {
          return {
            label: s.label,
            stroke: palette[i % palette.length],
            width: 2,
            spanGaps: true,
            scale: twoAxes && right[s.label] ? "right" : "y",
            points: { show: data.x.length < 60 }
          };
        }));
        var axes = [{}, { scale: "y" }];
        if (twoAxes) { axes.push({ scale: "right", side: 1, grid: { show: false } }); }
        var s = size(el);
        var plot = new uPlot({
          width: s.width,
          height: s.height,
          series: series,
          axes: axes,
          scales: { x: { time: data.time !== false } },
          hooks: { draw: [function () { el.setAttribute("data-drawn", "1"); }] }
        }, [data.x].concat(data.series.map(function (x) { return x.values; })), el);
        window.addEventListener("resize", function () { plot.setSize(size(el)); });
      })
      .catch(function (e) {
        el.textContent = "Chart unavailable: " + e.message;
        el.setAttribute("data-drawn", "error");
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var charts = document.querySelectorAll(".chart[data-src]");
    for (var i = 0; i < charts.length; i++) { draw(charts[i]); }
  });
})();
