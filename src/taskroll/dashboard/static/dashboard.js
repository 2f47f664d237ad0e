// taskroll dashboard: live refresh of [data-live] regions and the optional actions.
// No framework, no network access beyond this server.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "3");
  var state = document.getElementById("live-state");

  function refresh() {
    var regions = document.querySelectorAll("[data-live]");
    regions.forEach(function (region) {
      // one request at a time per region: a slow store must not pile requests up
      if (region.getAttribute("data-loading") === "yes") { return; }
      region.setAttribute("data-loading", "yes");
      fetch(region.getAttribute("data-live"), {headers: {"Accept": "text/html"}, cache: "no-store"})
        .then(function (response) {
          // 404: the pool or task is gone; the server sends a line saying so
          if (!response.ok && response.status !== 404) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (text) {
          region.innerHTML = text;
          body.setAttribute("data-refreshed", String(Date.now()));
          if (state) { state.textContent = "live " + new Date().toLocaleTimeString(); state.className = "live-state"; }
        })
        .catch(function () {
          if (state) { state.textContent = "offline"; state.className = "live-state offline"; }
        })
        .finally(function () { region.removeAttribute("data-loading"); });
    });
  }
  if (seconds > 0) { window.setInterval(refresh, seconds * 1000); }
  window.taskrollRefresh = refresh;

  function act(button) {
    var panel = button.closest(".actions");
    var action = button.getAttribute("data-action");
    var pool = panel.getAttribute("data-pool");
    var payload = {confirm: true, query: panel.getAttribute("data-query") || ""};
    var text = action === "retry" ? "Put the failed tasks matching the query back to waiting?"
      : action === "reset" ? "Put the running tasks matching the query back to waiting?"
      : "Change the priority of this task?";
    if (action === "prioritise") {
      var taskField = document.getElementById("action-task");
      var idFromQuery = "";
      try { idFromQuery = JSON.parse(payload.query || "{}")._id || ""; } catch (error) { idFromQuery = ""; }
      payload.task_id = (taskField && taskField.value) || idFromQuery;
      payload.priority = document.getElementById("action-priority").value;
    }
    if (!window.confirm(text)) { return; }
    fetch("/api/pools/" + encodeURIComponent(pool) + "/actions/" + action, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Taskroll-Token": body.getAttribute("data-token")},
      body: JSON.stringify(payload)
    }).then(function (response) {
      return response.json().then(function (data) { return [response.ok, data]; });
    }).then(function (pair) {
      var result = document.getElementById("action-result");
      result.textContent = pair[0] ? (pair[1].action + ": " + pair[1].changed + " task(s) changed")
        : ("refused: " + pair[1].error);
      refresh();
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.action") : null;
    if (button) { event.preventDefault(); act(button); }
  });
})();
