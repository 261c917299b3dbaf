"""Analyses over a store selection: compare, failure rate, variance, gradients.

Each analysis takes a :class:`stabstat.store.Store` (or, for the ``*_frame`` cores, an
already selected :class:`RunSet`) plus a :class:`Selection` and :class:`Settings`, and
returns an :class:`AnalysisResult` of typed rows (:mod:`stabstat.analysis.results`) whose
``to_dict()`` is what ``--format json`` prints.

Modules, one concept each:

* :mod:`~stabstat.analysis.selection`: :class:`Selection`, :class:`Settings`,
  :class:`RunSet`, :func:`select_runs` (the selection SQL), the failure rule and its text
  (:func:`failure_rule_text`), factor-name resolution (:func:`resolve_factor`);
* :mod:`~stabstat.analysis.levels`: a factor's levels in a RunSet frame, group values,
  failure counts, :func:`pair_by_seed`;
* :mod:`~stabstat.analysis.results`: the typed rows and :class:`AnalysisResult`;
* :mod:`~stabstat.analysis.compare`, :mod:`~stabstat.analysis.failure_rate`,
  :mod:`~stabstat.analysis.variance`, :mod:`~stabstat.analysis.gradients`: one analysis each.

Imports point one way: the analyses import selection, levels and results (results imports
selection for types only); this package loads each public name's module on its first use
(PEP 562: ``compare`` never loads decompose, plan or gradients); no submodule imports this
package. Outside the package only :mod:`stabstat.stats`, :mod:`stabstat.store`,
:mod:`stabstat.errors` and ``stabstat.__version__`` are used; never :mod:`stabstat.cli` or
:mod:`stabstat.report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabstat._lazy import lazy_package

if TYPE_CHECKING:  # the names below load with their module on first use (__getattr__)
    from stabstat.analysis.compare import GROUP_STATISTICS, compare, compare_frame
    from stabstat.analysis.decompose import decompose, decompose_frame
    from stabstat.analysis.expected_max import expected_max, expected_max_frame
    from stabstat.analysis.failure_rate import failure_rate, failure_rate_frame
    from stabstat.analysis.forgetting import forgetting, forgetting_frame
    from stabstat.analysis.gradients import gradients
    from stabstat.analysis.levels import pair_by_seed
    from stabstat.analysis.plan import plan, plan_frame
    from stabstat.analysis.results import AnalysisResult
    from stabstat.analysis.selection import (
        BASELINE_TOLERANCE,
        STATUSES_EXCLUDED,
        RunSet,
        Selection,
        Settings,
        failure_rule_text,
        resolve_factor,
        select_runs,
    )
    from stabstat.analysis.variance import variance, variance_frame

#: Public name -> the submodule that defines it, imported on first access (PEP 562): a
#: command loads only the analyses it runs (``compare`` does not load decompose, plan,
#: forgetting, gradients, ...: ~25 ms of CLI start-up).
_LAZY: dict[str, str] = {
    "GROUP_STATISTICS": "compare", "compare": "compare", "compare_frame": "compare",
    "decompose": "decompose", "decompose_frame": "decompose",
    "expected_max": "expected_max", "expected_max_frame": "expected_max",
    "failure_rate": "failure_rate", "failure_rate_frame": "failure_rate",
    "forgetting": "forgetting", "forgetting_frame": "forgetting",
    "gradients": "gradients",
    "pair_by_seed": "levels",
    "plan": "plan", "plan_frame": "plan",
    "AnalysisResult": "results",
    "BASELINE_TOLERANCE": "selection", "STATUSES_EXCLUDED": "selection", "RunSet": "selection",
    "Selection": "selection", "Settings": "selection", "failure_rule_text": "selection",
    "resolve_factor": "selection", "select_runs": "selection",
    "variance": "variance", "variance_frame": "variance",
}


lazy_package(__name__, _LAZY)

__all__ = [
    "BASELINE_TOLERANCE",
    "GROUP_STATISTICS",
    "STATUSES_EXCLUDED",
    "AnalysisResult",
    "RunSet",
    "Selection",
    "Settings",
    "compare",
    "compare_frame",
    "decompose",
    "decompose_frame",
    "expected_max",
    "expected_max_frame",
    "failure_rate",
    "failure_rate_frame",
    "failure_rule_text",
    "forgetting",
    "forgetting_frame",
    "gradients",
    "pair_by_seed",
    "plan",
    "plan_frame",
    "resolve_factor",
    "select_runs",
    "variance",
    "variance_frame",
]
