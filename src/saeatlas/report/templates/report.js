/* saeatlas report: highlight a module everywhere, show feature and unit details, search.
 *
 * Reads the JSON in #report-data (written by saeatlas.report.html). Every plot has a
 * highlight spec: "traces" (one trace per module: dim the others), "graph" (module
 * graph nodes: thicken the module's border), "band" (heatmap: frame the module's row or
 * column). Elements with class "module-item" and data-module preview a module on hover
 * and pin it on click; Esc clears. Text from data is inserted with textContent only.
 */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var DIM = 0.1;
  var pinned = null;
  var shown = null;

  function byId(id) { return document.getElementById(id); }
  function plotReady(el) { return el && el.data && window.Plotly; }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function num(x, digits) {
    if (x === null || x === undefined || (typeof x === "number" && !isFinite(x))) return "–";
    if (typeof x !== "number") return String(x);
    return Number(x.toPrecision(digits || 3)).toString();
  }

  /* ---- highlighting ------------------------------------------------------------- */

  function band(axis, i) {
    var s = { type: "rect", line: { color: "#111", width: 3 }, fillcolor: "rgba(0,0,0,0)" };
    if (axis === "x") { s.xref = "x"; s.yref = "paper"; s.x0 = i - 0.5; s.x1 = i + 0.5; s.y0 = 0; s.y1 = 1; }
    else { s.yref = "y"; s.xref = "paper"; s.y0 = i - 0.5; s.y1 = i + 0.5; s.x0 = 0; s.x1 = 1; }
    return s;
  }

  function showStatus(m) {
    var status = byId("highlight-status");
    if (!status) return;
    status.textContent = m === null ? "" : "Module " + m +
      (pinned === m ? " highlighted everywhere (click it again or press Esc to clear)" : " (preview)");
  }

  function render(m) {
    showStatus(m);
    if (m === shown) return;
    shown = m;
    Object.keys(D.plots).forEach(function (id) {
      var spec = D.plots[id], gd = byId(id);
      if (!plotReady(gd)) return;
      if (spec.kind === "traces") {
        var idx = [], op = [];
        spec.modules.forEach(function (mm, i) {
          if (mm === null) return;
          idx.push(i);
          op.push(m === null ? spec.opacity[i] : (mm === m ? 1 : DIM));
        });
        Plotly.restyle(gd, { opacity: op }, idx);
      } else if (spec.kind === "graph") {
        var lw = spec.modules.map(function (mm, i) { return m !== null && mm === m ? 6 : spec.lineWidth[i]; });
        var nop = spec.modules.map(function (mm) { return m === null || mm === m ? 1 : 0.3; });
        Plotly.restyle(gd, { "marker.line.width": [lw], "marker.opacity": [nop] }, [spec.trace]);
      } else if (spec.kind === "band") {
        var i = m === null ? -1 : spec.modules.indexOf(m);
        Plotly.relayout(gd, { shapes: i < 0 ? [] : [band(spec.axis, i)] });
      }
    });
    document.querySelectorAll(".module-item").forEach(function (node) {
      node.classList.toggle("is-highlighted", m !== null && Number(node.dataset.module) === m);
    });
    document.body.dataset.highlight = m === null ? "" : String(m);
  }

  function preview(m) { render(m); }
  function restore() { render(pinned); }
  function pin(m) { pinned = m; render(m); }
  function togglePin(m) { pin(pinned === m ? null : m); }

  /* ---- feature and unit details -------------------------------------------------- */

  var featurePos = {}, unitPos = {}, featureRow = {}, unitByName = {};
  D.features.id.forEach(function (f, i) { featureRow[f] = i; });
  D.units.name.forEach(function (n, i) { unitByName[n] = i; });

  function indexPositions(id, into) {
    var spec = D.plots[id];
    if (!spec || !spec.points) return;
    var ids = spec.points[0], xs = spec.points[1], ys = spec.points[2];
    for (var k = 0; k < ids.length; k++) into[ids[k]] = [xs[k], ys[k]];
  }

  function mark(id, pos) {
    var gd = byId(id), spec = D.plots[id];
    if (!plotReady(gd) || !spec) return;
    Plotly.restyle(gd, { x: [pos ? [pos[0]] : []], y: [pos ? [pos[1]] : []] }, [spec.selected]);
  }

  function unitLink(u) {
    var a = el("a", { href: "#", "data-unit": String(u), text: D.units.name[u] });
    return a;
  }
  function featureLink(f) {
    return el("a", { href: "#", "data-feature": String(f), text: "feature " + f });
  }
  function moduleLink(m) {
    if (m === null || m < 0) return el("span", { text: "no module" });
    var a = el("a", { href: "#module-" + m, cls: "module-ref", "data-pin": String(m), text: "module " + m });
    a.style.borderColor = D.modules[m] ? D.modules[m].colour : "#999";
    return a;
  }
  function row(label, value) {
    return el("tr", {}, el("th", { text: label }), el("td", {}, value));
  }

  function showFeature(f, scroll) {
    var i = featureRow[f];
    var box = byId("details-body");
    box.textContent = "";
    if (i === undefined) {
      box.appendChild(el("p", { text: "No feature " + f + " (the SAE has " + D.features.id.length + " features)." }));
      return false;
    }
    var m = D.features.module[i], det = D.featureDetail[f];
    box.appendChild(el("h3", { text: "Feature " + f }));
    var t = el("table", { cls: "kv" });
    t.appendChild(row("module", moduleLink(m)));
    t.appendChild(row("density", num(D.features.density[i])));
    if (det) {
      if (det.fd !== undefined) t.appendChild(row("firing density", num(det.fd)));
      if (det.ma !== undefined) t.appendChild(row("mean activation", num(det.ma)));
      if (det.mc !== undefined) t.appendChild(row("max unit correlation", num(det.mc, 2)));
      if (det.st !== undefined) t.appendChild(row("stability", num(det.st, 2)));
      if (det.sel !== undefined) t.appendChild(row("selectivity", num(det.sel, 2) + (det.pl !== null && det.pl !== undefined ? " (prefers " + (det.pl === "" ? '""' : det.pl) + ")" : "")));
    }
    box.appendChild(t);
    if (det && det.u) {
      box.appendChild(el("h4", { text: "Writes to (decoder)" }));
      var ul = el("ul", { cls: "plain" });
      det.u.forEach(function (u, k) { ul.appendChild(el("li", {}, unitLink(u), " " + num(det.w[k]))); });
      box.appendChild(ul);
    }
    if (det && det.r) {
      box.appendChild(el("h4", { text: "Reads from (encoder)" }));
      var ul2 = el("ul", { cls: "plain" });
      det.r.forEach(function (u, k) { ul2.appendChild(el("li", {}, unitLink(u), " " + num(det.rw[k]))); });
      box.appendChild(ul2);
    }
    if (det && det.ex && det.ex.length) {
      box.appendChild(el("h4", { text: "Top examples" }));
      var ol = el("ol", { cls: "examples" });
      det.ex.forEach(function (e) {
        ol.appendChild(el("li", {}, el("span", { cls: "muted", text: "row " + e[1] + " (" + num(e[2]) + ") " }), e[3]));
      });
      box.appendChild(ol);
    }
    var pos = featurePos[f];
    mark("feature-map-plot", pos || null);
    if (!pos) box.appendChild(el("p", { cls: "muted", text: "Not drawn on the sampled feature map." }));
    if (scroll && pos) byId("feature-map").scrollIntoView({ behavior: "smooth", block: "start" });
    return true;
  }

  function showUnit(u, scroll) {
    var box = byId("details-body");
    box.textContent = "";
    var m = D.units.module[u];
    box.appendChild(el("h3", { text: "Unit " + D.units.name[u] }));
    var t = el("table", { cls: "kv" });
    t.appendChild(row("module", moduleLink(m)));
    t.appendChild(row("membership", num(D.units.membership[u], 2)));
    t.appendChild(row("shared by two modules", D.units.shared[u] ? "yes" : "no"));
    box.appendChild(t);
    var w = D.units.writers[u] || [];
    box.appendChild(el("h4", { text: w.length ? "Features writing most to it" : "No feature lists it among its top units" }));
    var ul = el("ul", { cls: "plain" });
    w.forEach(function (f) { ul.appendChild(el("li", {}, featureLink(f))); });
    box.appendChild(ul);
    mark("unit-map-plot", unitPos[u] || null);
    if (scroll) byId("unit-map").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  /* ---- search ---------------------------------------------------------------------- */

  function search(q) {
    var out = byId("search-result");
    q = (q || "").trim();
    out.textContent = "";
    if (!q) return;
    var hit;
    if ((hit = q.match(/^(?:f|feature)?\s*#?\s*(\d+)$/i))) {
      var f = Number(hit[1]);
      if (showFeature(f, true)) {
        out.textContent = "Feature " + f;
        var fm = D.features.module[featureRow[f]];
        if (fm >= 0) pin(fm);
      } else out.textContent = "No feature " + f;
      return;
    }
    if ((hit = q.match(/^(?:m|module)\s*#?\s*(\d+)$/i))) {
      var m = Number(hit[1]);
      if (!D.modules[m]) { out.textContent = "No module " + m; return; }
      pin(m);
      out.textContent = "Module " + m;
      var card = byId("module-" + m);
      if (card) card.scrollIntoView({ behavior: "smooth", block: "start" });
      return;
    }
    var u = unitByName[q];
    if (u === undefined) {
      var lower = q.toLowerCase();
      var found = D.units.name.filter(function (n) { return n.toLowerCase() === lower; });
      if (found.length) u = unitByName[found[0]];
    }
    if (u !== undefined) {
      showUnit(u, true);
      out.textContent = "Unit " + D.units.name[u];
      if (D.units.module[u] >= 0) pin(D.units.module[u]);
      return;
    }
    var partial = D.units.name.filter(function (n) { return n.toLowerCase().indexOf(q.toLowerCase()) === 0; }).slice(0, 8);
    if (partial.length) {
      out.appendChild(document.createTextNode("Units: "));
      partial.forEach(function (n) { out.appendChild(unitLink(unitByName[n])); out.appendChild(document.createTextNode(" ")); });
    } else {
      out.textContent = "Nothing matches \u201c" + q + "\u201d: type a feature id (123), a unit (layer:index) or a module (m3).";
    }
  }

  /* ---- wiring ----------------------------------------------------------------------- */

  function onPlot(id, event, fn) {
    var gd = byId(id);
    if (plotReady(gd) && gd.on) gd.on(event, fn);
  }

  function wire() {
    indexPositions("feature-map-plot", featurePos);
    indexPositions("unit-map-plot", unitPos);

    onPlot("feature-map-plot", "plotly_click", function (e) {
      var p = e.points[0], f = p.customdata;
      if (f === undefined || f === null) return;
      showFeature(f, false);
      var m = D.features.module[featureRow[f]];
      if (m >= 0) pin(m);
    });
    onPlot("unit-map-plot", "plotly_click", function (e) {
      var u = e.points[0].customdata;
      if (u === undefined || u === null) return;
      showUnit(u, false);
      if (D.units.module[u] >= 0) pin(D.units.module[u]);
    });
    ["feature-map-plot", "unit-map-plot"].forEach(function (id) {
      onPlot(id, "plotly_legendclick", function (e) {
        var m = D.plots[id].modules[e.curveNumber];
        if (m !== null && m >= 0) togglePin(m);
        return false;
      });
    });
    var graph = D.plots["module-graph-plot"];
    if (graph) {
      var nodeModule = function (e) {
        var p = e.points[0];
        return p.curveNumber === graph.trace ? graph.modules[p.pointNumber] : null;
      };
      onPlot("module-graph-plot", "plotly_hover", function (e) { var m = nodeModule(e); if (m !== null) preview(m); });
      onPlot("module-graph-plot", "plotly_unhover", restore);
      onPlot("module-graph-plot", "plotly_click", function (e) { var m = nodeModule(e); if (m !== null) togglePin(m); });
    }
    Object.keys(D.plots).forEach(function (id) {
      var spec = D.plots[id];
      if (spec.kind !== "band") return;
      onPlot(id, "plotly_click", function (e) {
        var p = e.points[0], key = spec.axis === "x" ? p.x : p.y;
        var i = spec.labels.indexOf(key);
        if (i >= 0) togglePin(spec.modules[i]);
      });
    });

    document.querySelectorAll(".module-item").forEach(function (node) {
      var m = Number(node.dataset.module);
      node.addEventListener("mouseenter", function () { preview(m); });
      node.addEventListener("mouseleave", restore);
      node.addEventListener("click", function (e) {
        if (e.target.closest("a[data-feature], a[data-unit]")) return;
        togglePin(m);
      });
    });
    document.addEventListener("click", function (e) {
      var a = e.target.closest("a[data-feature], a[data-unit], a[data-pin]");
      if (!a) return;
      if (a.dataset.feature !== undefined) { e.preventDefault(); showFeature(Number(a.dataset.feature), true); }
      else if (a.dataset.unit !== undefined) { e.preventDefault(); showUnit(Number(a.dataset.unit), true); }
      else if (a.dataset.pin !== undefined) { pin(Number(a.dataset.pin)); }
    });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") pin(null); });
    var form = byId("search");
    form.addEventListener("submit", function (e) { e.preventDefault(); search(byId("search-input").value); });
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "complete") wire();
  else window.addEventListener("load", wire);
})();
