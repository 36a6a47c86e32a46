(function () {
  "use strict";
  // Sort a table by a clicked header: numbers by data-sort (empty cells last), text by its content.
  function key(cell, numeric) {
    if (!cell) return numeric ? NaN : "";
    var v = cell.getAttribute("data-sort");
    if (numeric) return v === null ? NaN : parseFloat(v);
    return (v === null ? cell.textContent : v).toLowerCase();
  }
  function sortBy(table, index, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "descending" ? "ascending"
      : th.getAttribute("aria-sort") === "ascending" ? "descending" : (numeric ? "descending" : "ascending");
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, i) {
      return { row: r, value: key(r.cells[index], numeric), index: i };
    });
    rows.sort(function (a, b) {
      var an = numeric && isNaN(a.value), bn = numeric && isNaN(b.value);
      if (an || bn) return an === bn ? a.index - b.index : (an ? 1 : -1);
      var c = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
      return (dir === "descending" ? -c : c) || a.index - b.index;
    });
    rows.forEach(function (x) { body.appendChild(x.row); });
  }
  // A shared link can carry a sort: #sort=<column header>&dir=ascending|descending sorts every table with it.
  var wanted = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var i = kv.indexOf("=");
    if (i <= 0) return;
    try { wanted[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); } catch (e) { /* not percent-encoded */ }
  });
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      th.setAttribute("tabindex", "0");
      th.addEventListener("click", function () { sortBy(table, index, th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(table, index, th); });
      if (wanted.sort && th.textContent === wanted.sort) {
        if (wanted.dir === "ascending" || wanted.dir === "descending")  // the first sort goes the other way
          th.setAttribute("aria-sort", wanted.dir === "ascending" ? "descending" : "ascending");
        sortBy(table, index, th);
      }
    });
  });
  document.body.setAttribute("data-ready", "1");
})();
