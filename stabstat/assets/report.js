// stabstat report: render every chart of the page with vega-embed (inlined above), offline.
// The specs are Vega (compiled from Altair's Vega-Lite when the page was written).
// Exposes window.stabstatReady: a Promise of {chartId: number of data marks drawn}, and
// window.stabstatViews: {chartId: vega View}, for tests and for readers poking at the data.
(function () {
  "use strict";
  var specs = JSON.parse(document.getElementById("stabstat-specs").textContent);

  // Count drawn items of data marks (role "mark"), not axes or legends: a chart whose data
  // did not reach the page draws axes but no marks.
  function countMarks(root) {
    var n = 0;
    (function walk(node) {
      if (!node) { return; }
      if (node.marktype && node.marktype !== "group" && node.role === "mark") {
        n += (node.items || []).length;
      }
      (node.items || []).forEach(walk);
    })(root);
    return n;
  }

  var views = {};
  var jobs = Object.keys(specs).map(function (id) {
    var el = document.getElementById(id);
    var opts = {
      // Canvas: thousands of marks draw into one bitmap instead of one SVG element each
      // (issue 18); tooltips, the export actions (PNG and SVG) and the views stay the same.
      renderer: "canvas",
      // The specs are Vega compiled from Vega-Lite (report/vega.py) with each mark's tooltip
      // in its "hover" encoding (report/vegaprune.py): computed for the item under the
      // pointer, not for every item while drawing. Hover processing evaluates it.
      hover: true,
      // No "Open in Vega Editor" (it would go online); export and source stay available.
      actions: { export: true, source: true, compiled: false, editor: false },
      downloadFileName: id
    };
    return vegaEmbed(el, specs[id], opts).then(function (res) {
      views[id] = res.view;
      var n = countMarks(res.view.scenegraph().root);
      el.setAttribute("data-marks", String(n));
      return [id, n];
    }).catch(function (err) {
      el.classList.add("chart-error");
      el.textContent = "This chart could not be drawn: " + err;
      console.error("stabstat: chart " + id + " failed: " + err);
      return [id, 0];
    });
  });
  window.stabstatViews = views;
  window.stabstatReady = Promise.all(jobs).then(function (pairs) {
    var out = {};
    pairs.forEach(function (p) { out[p[0]] = p[1]; });
    document.body.setAttribute("data-rendered", "true");
    return out;
  });
})();
