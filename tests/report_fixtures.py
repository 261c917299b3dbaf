"""Generated run directories and databases for the report and chart tests (no training).

The runs imitate the failure mode of Mosbach et al. (2021) with a seeded generator: a failed run
stays at the majority-class accuracy, its loss stalls near ln 2 and the gradient norms of its
lower layers collapse; a successful run learns. Everything comes from ``numpy.random.Generator``
seeded per run, so a fixture is the same on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

LAYERS = ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]
MAJORITY = 0.527


def make_runs(
    out_dir: Path,
    *,
    seeds: int = 8,
    steps: int = 60,
    grad_every: int = 5,
    n_trains: tuple[int, ...] = (1000,),
    bias_corrections: tuple[bool, ...] = (False, True),
    task: str = "rte",
) -> list[str]:
    """Write ``len(n_trains) * len(bias_corrections) * seeds`` finished runs; return their ids."""
    from runner.logwriter import RunLogger

    ids = []
    for n_train in n_trains:
        for bc in bias_corrections:
            for seed in range(seeds):
                run_id = f"{task}-n{n_train}-bc{int(bc)}-s{seed}"
                rng = np.random.default_rng([seed, n_train, int(bc)])
                p_fail = 0.1 if bc else (0.6 if n_train <= 1000 else 0.3)
                failed = bool(rng.random() < p_fail) or (not bc and seed == 0)
                config = {"task": task, "seed": seed, "lr": 2e-5, "bias_correction": bc,
                          "n_train": n_train, "max_steps": steps}
                taskinfo = {"name": task, "num_labels": 2, "n_train": n_train, "n_dev": 277,
                            "metrics": ["accuracy", "f1"],
                            "majority": {"accuracy": MAJORITY, "f1": 0.0},
                            "higher_is_better": {"accuracy": True, "f1": True}}
                with RunLogger(out_dir, run_id, config, task=taskinfo,
                               environment={"device": "cpu"}) as log:
                    for step in range(1, steps + 1):
                        if failed:
                            loss = math.log(2) + 0.02 * rng.standard_normal()
                        else:
                            loss = 0.69 * math.exp(-step / (steps / 4)) + 0.05 * rng.random()
                        log.log_step(step, loss=loss, lr=2e-5, grad_norm=1.0 + rng.random(),
                                     epoch=step / steps * 3, wall_time=0.1 * step)
                        if step % grad_every == 0:
                            norms = []
                            for depth, _ in enumerate(LAYERS):
                                base = 0.3 * (depth + 1) * math.exp(0.2 * rng.standard_normal())
                                if failed and depth < 3 and step > steps // 5:
                                    base *= 1e-3
                                norms.append(base)
                            log.log_layer_grads(step, LAYERS, list(range(len(LAYERS))), norms)
                        if step % (steps // 2) == 0:
                            acc = MAJORITY if failed else 0.66 + 0.04 * rng.standard_normal()
                            log.log_eval(step, "dev", {"accuracy": acc,
                                                       "f1": 0.0 if failed else acc + 0.05})
                ids.append(run_id)
    return ids


def make_db(tmp: Path, **kwargs: Any) -> Path:
    """Generate runs under ``tmp/runs`` and ingest them into ``tmp/stabstat.duckdb``."""
    from stabstat.ingest import ingest
    from stabstat.store import Store

    runs = tmp / "runs"
    make_runs(runs, **kwargs)
    db = tmp / "stabstat.duckdb"
    with Store.open(db, read_only=False) as store:
        report = ingest(store, [runs])
        assert report.ok, report.summary()
    return db


def small_report(tmp: Path, **build_options: Any) -> Any:
    """A :class:`stabstat.report.Report` over a small generated store (4 seeds x 30 steps,
    by bias correction, 200 resamples); ``build_options`` go to ``build_report``."""
    from stabstat.analysis import Settings
    from stabstat.report import build_report
    from stabstat.store import Store

    db = make_db(tmp, seeds=4, steps=30)
    with Store.open(db) as store:
        return build_report(store, by="bias_correction", settings=Settings(resamples=200), **build_options)


def page_specs(page: str) -> dict[str, Any]:
    """chart id -> the spec the page carries (its ``stabstat-specs`` script)."""
    import json
    import re

    found = re.search(r'id="stabstat-specs">(.*?)</script>', page, re.S)
    assert found is not None, "no stabstat-specs script in the page"
    out: dict[str, Any] = json.loads(found.group(1))
    return out



def require_browser() -> None:
    """Skip the calling test, with its reason, when no system Chromium or no Playwright is
    installed (CI installs both: nothing skips there)."""
    import pytest

    from stabstat._browser import find_chromium

    if find_chromium() is None:
        pytest.skip("no system Chromium (/usr/bin/chromium): apt-get install chromium")
    pytest.importorskip("playwright.sync_api")


def evaluate_with_vega(js: str, arg: Any) -> Any:
    """``js`` (a JavaScript function of one argument) evaluated with ``arg`` in a blank
    headless-Chromium page holding the report's Vega bundle; its result."""
    from playwright.sync_api import sync_playwright

    from stabstat._browser import CHROMIUM_ARGS, find_chromium
    from stabstat.report import javascript_bundle

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.add_script_tag(content=javascript_bundle())
            return page.evaluate(js, arg)
        finally:
            browser.close()
