(function () {
  "use strict";
  // Everything the page shows is embedded in #lb-data: no request ever leaves the page.
  var data = JSON.parse(document.getElementById("lb-data").textContent);
  var groupsEl = document.getElementById("groups");
  var bbSel = document.getElementById("filter-backbone");
  var tsSel = document.getElementById("filter-task-set");

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function fmt(x) { return Number(x).toFixed(2); }
  function paramText(p) {
    var keys = Object.keys(p || {}).sort();
    return keys.length ? keys.map(function (k) { return k + "=" + p[k]; }).join(", ") : "-";
  }
  function columns(g) {
    var cols = [
      { col: "method", label: "Method", numeric: false },
      { col: "params", label: "Parameters", numeric: false },
      { col: "normalized", label: "Avg. Normalized", numeric: true }
    ];
    g.tasks.forEach(function (t) { cols.push({ col: "t:" + t, label: t, numeric: true }); });
    return cols;
  }
  function cellValue(row, col) {
    if (col === "method") return row.label;
    if (col === "params") return paramText(row.params);
    if (col === "normalized") return row.normalized;
    return row.scores[col.slice(2)];
  }

  function sortBy(table, col, numeric) {
    var th = table.querySelector('th[data-col="' + CSS.escape(col) + '"]');
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "descending" ? "ascending" : "descending") : (numeric ? "descending" : "ascending");
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var tbody = table.tBodies[0];
    var rows = Array.prototype.filter.call(tbody.rows, function (r) { return !r.classList.contains("detail"); });
    var keyed = rows.map(function (r, i) {
      var v = r.querySelector('td[data-col="' + CSS.escape(col) + '"]').getAttribute("data-value");
      return { row: r, value: numeric ? parseFloat(v) : v.toLowerCase(), index: i };
    });
    keyed.sort(function (a, b) {
      var c = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
      if (dir === "descending") c = -c;
      return c || a.index - b.index;
    });
    keyed.forEach(function (k) {
      tbody.appendChild(k.row);
      if (k.row.detailRow) tbody.appendChild(k.row.detailRow);
    });
  }

  function detailContent(row, g, ncols) {
    var lora = g.lora, pre = g.pretrained;
    var td = el("td", { colspan: String(ncols) });
    var t = el("table", { class: "breakdown" });
    var head = el("tr");
    ["task", "score", "LoRA", "% of LoRA", "pretrained"].forEach(function (h) { head.appendChild(el("th", {}, h)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    g.tasks.forEach(function (task) {
      var tr = el("tr", { "data-task": task });
      tr.appendChild(el("td", {}, task));
      tr.appendChild(el("td", {}, fmt(row.scores[task])));
      tr.appendChild(el("td", {}, fmt(lora[task])));
      tr.appendChild(el("td", {}, lora[task] ? fmt(100 * row.scores[task] / lora[task]) : "-"));
      tr.appendChild(el("td", {}, fmt(pre[task])));
      body.appendChild(tr);
    });
    t.appendChild(body);
    td.appendChild(t);
    var dl = el("dl");
    var p = row.provenance || {};
    var v = p.versions || {};
    var hw = p.hardware || {};
    [
      ["method", row.method.name + " (" + row.method.source + (row.method.plugin_spec ? ": " + row.method.plugin_spec + " sha256 " + row.method.plugin_sha256 : "") + (row.method.distribution ? ": " + row.method.distribution + " " + (row.method.distribution_version || "") : "") + ")"],
      ["parameters", paramText(row.params)],
      ["date", p.date],
      ["merge-bench", (p.merge_bench || {}).version + " @ " + ((p.merge_bench || {}).git_commit || "no commit")],
      ["backend / device / seed", p.backend + " / " + p.device + " / " + p.seed],
      ["versions", Object.keys(v).sort().map(function (k) { return k + " " + (v[k] === null ? "-" : v[k]); }).join(", ")],
      ["hardware", [hw.platform, hw.cpu, hw.cpu_count ? hw.cpu_count + " CPUs" : null, hw.gpu].filter(Boolean).join("; ")],
      ["base model", (p.backbone || {}).base_id + " @ " + ((p.backbone || {}).base_revision || "-")],
      ["merged sha256", p.merged_sha256 || "-"],
      ["entry sha256", row.entry_sha256]
    ].forEach(function (kv) { dl.appendChild(el("dt", {}, kv[0])); dl.appendChild(el("dd", {}, String(kv[1]))); });
    td.appendChild(dl);
    return td;
  }

  function toggleDetail(tr, row, g, ncols) {
    if (tr.detailRow) {
      tr.detailRow.classList.toggle("hidden");
    } else {
      tr.detailRow = el("tr", { class: "detail", "data-detail-for": row.label });
      tr.detailRow.appendChild(detailContent(row, g, ncols));
      tr.parentNode.insertBefore(tr.detailRow, tr.nextSibling);
    }
    tr.setAttribute("aria-expanded", tr.detailRow.classList.contains("hidden") ? "false" : "true");
  }

  function renderGroup(g) {
    var section = el("section", { class: "group", "data-backbone": g.backbone, "data-task-set": g.task_set });
    section.appendChild(el("h2", {}, g.backbone + " · " + g.task_set));
    section.appendChild(el("p", { class: "tasks" }, g.tasks.length + " tasks: " + g.tasks.join(", ")));
    var cols = columns(g);
    var table = el("table", { class: "board" });
    var head = el("tr");
    cols.forEach(function (c) {
      var th = el("th", { "data-col": c.col, class: c.numeric ? "num" : "text", title: "sort by " + c.label }, c.label);
      if (c.col === "normalized") th.setAttribute("aria-sort", "descending");  // rows arrive best first
      th.addEventListener("click", function () { sortBy(table, c.col, c.numeric); });
      head.appendChild(th);
    });
    table.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    var best = {};
    g.rows.forEach(function (row) {
      if (row.kind !== "method") return;
      g.tasks.forEach(function (t) { best[t] = Math.max(best[t] === undefined ? -Infinity : best[t], row.scores[t]); });
    });
    g.rows.forEach(function (row) {
      var tr = el("tr", { class: row.kind === "method" ? "method" : "ref", "data-key": row.label, "data-kind": row.kind });
      cols.forEach(function (c) {
        var value = cellValue(row, c.col);
        var td = el("td", { "data-col": c.col, "data-value": String(value), class: c.numeric ? "num" : "text" },
                    c.numeric ? fmt(value) : value);
        if (c.col === "method" && row.kind === "method") {
          td.classList.add("method");
          td.title = "per-task breakdown and provenance";
          td.addEventListener("click", function () { toggleDetail(tr, row, g, cols.length); });
        }
        if (row.kind === "method" && c.col.slice(0, 2) === "t:" && value === best[c.col.slice(2)]) td.classList.add("best");
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    section.appendChild(table);
    return section;
  }

  function fillSelect(select, values, keep) {
    select.innerHTML = "";
    select.appendChild(el("option", { value: "" }, "all"));
    values.forEach(function (v) { select.appendChild(el("option", { value: v }, v)); });
    select.value = values.indexOf(keep) >= 0 ? keep : "";
  }
  function uniq(list) { return list.filter(function (v, i) { return list.indexOf(v) === i; }); }

  function applyFilters() {
    var bb = bbSel.value;
    var sets = uniq(data.groups.filter(function (g) { return !bb || g.backbone === bb; }).map(function (g) { return g.task_set; }));
    fillSelect(tsSel, sets, tsSel.value);
    var ts = tsSel.value;
    groupsEl.querySelectorAll("section.group").forEach(function (s) {
      var show = (!bb || s.getAttribute("data-backbone") === bb) && (!ts || s.getAttribute("data-task-set") === ts);
      s.classList.toggle("hidden", !show);
    });
  }

  // Test and link hook: #backbone=B&taskset=T&sort=COL&dir=ascending|descending&open=METHOD_KEY
  // drives the same handlers a user's clicks and choices do.
  function applyHash() {
    var params = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("=");
      params[decodeURIComponent(kv.slice(0, i < 0 ? kv.length : i))] = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1));
    });
    if ("backbone" in params) { bbSel.value = params.backbone; bbSel.dispatchEvent(new Event("change")); }
    if ("taskset" in params) { tsSel.value = params.taskset; tsSel.dispatchEvent(new Event("change")); }
    if (params.sort) {
      groupsEl.querySelectorAll("table.board").forEach(function (table) {
        var th = table.querySelector('thead th[data-col="' + CSS.escape(params.sort) + '"]');
        if (!th) return;
        for (var i = 0; i < 2; i++) {
          th.click();
          if (!params.dir || th.getAttribute("aria-sort") === params.dir) break;
        }
      });
    }
    if (params.open) {
      groupsEl.querySelectorAll('tr.method[data-key="' + CSS.escape(params.open) + '"] td.method').forEach(function (td) { td.click(); });
    }
  }

  data.groups.forEach(function (g) { groupsEl.appendChild(renderGroup(g)); });
  if (!data.groups.length) groupsEl.appendChild(el("p", { id: "empty" }, "No entries yet."));
  fillSelect(bbSel, uniq(data.groups.map(function (g) { return g.backbone; })), "");
  bbSel.addEventListener("change", applyFilters);
  tsSel.addEventListener("change", applyFilters);
  applyFilters();
  window.addEventListener("hashchange", applyHash);
  applyHash();
  document.body.setAttribute("data-ready", "1");
})();
