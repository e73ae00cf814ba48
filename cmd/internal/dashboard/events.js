// Live events: prepend each event of the group's stream to the table.
(function () {
  var rows = document.getElementById("event-rows");
  var state = document.getElementById("live-state");
  var es = new EventSource("/events/stream");
  es.onopen = function () { state.textContent = "connected"; };
  es.onerror = function () { state.textContent = "reconnecting…"; };
  es.onmessage = function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (err) { return; }
    var tr = document.createElement("tr");
    tr.className = "live";
    var cells = [e.shown, e.kind, e.server,
      e.session || "-", e.user || "-", e.terminal || "-", ((e.target || "") + " " + (e.reason || "")).trim()];
    cells.forEach(function (c) { var td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > 500) { rows.removeChild(rows.lastChild); }
  };
})();
