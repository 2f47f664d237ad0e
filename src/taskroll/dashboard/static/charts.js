// Charts of the rolling and online views, drawn with the uPlot shipped beside this file.
(function () {
  "use strict";
  var palette = ["#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#56ccf2", "#333333"];
  function seconds(day) { return Date.parse(day + "T00:00:00Z") / 1000; }
  function draw(element, title, xs, series) {
    if (!element || !window.uPlot || xs.length === 0) {
      if (element) { element.textContent = "no values to plot"; }
      return;
    }
    var options = {
      title: title, width: Math.min(900, element.clientWidth || 900), height: 260,
      series: [{}].concat(series.map(function (item, index) {
        return {label: item.label, stroke: palette[index % palette.length], width: 2, spanGaps: true,
                points: {show: true}};
      }))
    };
    new window.uPlot(options, [xs].concat(series.map(function (item) { return item.values; })), element);
    element.setAttribute("data-drawn", "yes");
  }
  function rolling() {
    var node = document.getElementById("rolling-data");
    if (!node) { return; }
    var data = JSON.parse(node.textContent);
    ["IC", "Rank IC"].forEach(function (metric) {
      var days = {};
      Object.keys(data.models).forEach(function (model) {
        data.models[model].forEach(function (window) {
          if (window[metric] !== undefined) { days[window.test[0]] = true; }
        });
      });
      var sorted = Object.keys(days).sort();
      var series = Object.keys(data.models).map(function (model) {
        var byDay = {};
        data.models[model].forEach(function (window) {
          if (window[metric] !== undefined) { byDay[window.test[0]] = window[metric]; }
        });
        return {label: model, values: sorted.map(function (day) { return day in byDay ? byDay[day] : null; })};
      }).filter(function (item) { return item.values.some(function (value) { return value !== null; }); });
      draw(document.getElementById(metric === "IC" ? "ic-chart" : "rank-ic-chart"),
           metric + " per test window (x: test start)", sorted.map(seconds), series);
    });
  }
  function online() {
    var node = document.getElementById("online-data");
    if (!node) { return; }
    var data = JSON.parse(node.textContent);
    var rows = data.daily || [];
    draw(document.getElementById("online-chart"), "daily IC of the served signals",
         rows.map(function (row) { return seconds(row.date); }),
         [{label: "IC", values: rows.map(function (row) { return row.ic; })},
          {label: "Rank IC", values: rows.map(function (row) { return row.rank_ic; })}]);
  }
  function ensembles() {
    var button = document.getElementById("compute-ensembles");
    if (!button) { return; }
    button.addEventListener("click", function () {
      button.disabled = true;
      button.textContent = "computing\u2026";
      fetch(button.getAttribute("data-url"), {cache: "no-store"})
        .then(function (response) { return response.json(); })
        .then(function (data) {
          var table = document.getElementById("ensemble-table");
          table.textContent = "";
          var names = Object.keys(data.ensembles || {});
          var head = table.insertRow();
          ["ensemble", "IC", "Rank IC", "days"].forEach(function (title) {
            var cell = document.createElement("th"); cell.textContent = title; head.appendChild(cell);
          });
          names.forEach(function (name) {
            var item = data.ensembles[name], row = table.insertRow();
            row.className = "ensemble-row";
            [name, item.IC === null ? "" : item.IC.toFixed(4),
             item["Rank IC"] === null ? "" : item["Rank IC"].toFixed(4), String(item.days)]
              .forEach(function (value) { row.insertCell().textContent = value; });
          });
          var days = {};
          names.forEach(function (name) {
            data.ensembles[name].cumulative.forEach(function (pair) { days[pair[0]] = true; });
          });
          var sorted = Object.keys(days).sort();
          draw(document.getElementById("ensemble-chart"), "cumulative daily IC of the ensembles",
               sorted.map(seconds), names.map(function (name) {
                 var byDay = {};
                 data.ensembles[name].cumulative.forEach(function (pair) { byDay[pair[0]] = pair[1]; });
                 return {label: name, values: sorted.map(function (day) { return day in byDay ? byDay[day] : null; })};
               }));
          button.textContent = "recompute (" + data.runs + " runs, " + data.skipped + " left out)";
          button.disabled = false;
        })
        .catch(function () { button.textContent = "failed; retry"; button.disabled = false; });
    });
  }
  rolling();
  online();
  ensembles();
})();
