"""Altair charts of fine-tuning stability, one function per view.

Every chart function takes a small, already-aggregated :class:`polars.DataFrame` whose columns are
listed in its docstring and returns an :class:`altair.Chart` (or layered / concatenated chart) that
renders in Jupyter, in the HTML report (:mod:`stabstat.report`) and through ``vl-convert`` for
static export (``stabstat chart``). The matching ``*_data`` functions in
:mod:`stabstat.chartdata` build these frames from a :class:`stabstat.store.Store` with DuckDB, so
that only aggregated rows reach a page (the downsampling rules are documented there).

Charts embed their data inline (``{"values": [...]}``) with floats rounded to
:data:`SIGNIFICANT_DIGITS` significant digits: a chart is a pure function of its frame, so the
same frame always gives the same Vega-Lite JSON (the report relies on it for byte-identical
output), and no global ``alt.data_transformers`` setting is read or changed.

Modules, by view family (every public name is re-exported here, so ``from stabstat import
charts; charts.forest(...)`` is the one import users need):

* :mod:`stabstat.charts._base` - colours, sizes, inline data, frame helpers;
* :mod:`stabstat.charts.metric` - :func:`metric_by_config` (Figure 1), :func:`metric_vs_loss`;
* :mod:`stabstat.charts.failure` - :func:`failure_rate`, :func:`failure_rate_vs`;
* :mod:`stabstat.charts.loss` - :func:`loss_curves`, :func:`loss_bands`;
* :mod:`stabstat.charts.gradients` - :func:`layer_gradients`, :func:`layer_gradients_heatmap`;
* :mod:`stabstat.charts.forest` - :func:`forest`;
* :mod:`stabstat.charts.examples` - :func:`uncertainty_sources` (seeds vs examples);
* :mod:`stabstat.charts.sequential` - :func:`sequence_funnel`, :func:`claims_funnels` (confidence sequences);
* :mod:`stabstat.charts.export` - :func:`spec`, :func:`save` (vl-convert).

Examples
--------
>>> import polars as pl
>>> from stabstat import charts
>>> runs = pl.DataFrame({"config": ["a", "a", "b"], "run_id": ["r1", "r2", "r3"],
...                      "value": [0.52, 0.71, 0.70], "failed": [True, False, False],
...                      "majority": [0.53, 0.53, 0.53]})
>>> chart = charts.metric_by_config(runs)
>>> sorted(chart.to_dict()["layer"][1]["encoding"])
['color', 'shape', 'tooltip', 'x', 'xOffset', 'y']
"""

from __future__ import annotations

from stabstat.charts._base import (
    FAILED_COLOR,
    OK_COLOR,
    SIGNIFICANT_DIGITS,
    STATUS_DOMAIN,
    STATUS_RANGE,
    AnyChart,
    inline_data,
)
from stabstat.charts.early import early_curves
from stabstat.charts.examples import uncertainty_sources
from stabstat.charts.export import save, spec
from stabstat.charts.failure import failure_rate, failure_rate_vs
from stabstat.charts.forest import forest
from stabstat.charts.forgetting import forgetting_curves
from stabstat.charts.gradients import layer_gradients, layer_gradients_heatmap
from stabstat.charts.loss import loss_bands, loss_curves
from stabstat.charts.metric import metric_by_config, metric_vs_loss
from stabstat.charts.planning import expected_max_curves, power_curves
from stabstat.charts.sequential import claims_funnels, sequence_funnel

__all__ = [
    "claims_funnels",
    "FAILED_COLOR",
    "AnyChart",
    "OK_COLOR",
    "SIGNIFICANT_DIGITS",
    "STATUS_DOMAIN",
    "STATUS_RANGE",
    "early_curves",
    "expected_max_curves",
    "failure_rate",
    "failure_rate_vs",
    "forest",
    "forgetting_curves",
    "inline_data",
    "layer_gradients",
    "layer_gradients_heatmap",
    "loss_bands",
    "loss_curves",
    "metric_by_config",
    "metric_vs_loss",
    "power_curves",
    "save",
    "sequence_funnel",
    "spec",
    "uncertainty_sources",
]

