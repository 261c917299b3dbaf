"""stabstat.stats.sequential: confidence sequences, checked by simulation and by references.

Time-uniform coverage: a confidence sequence covers the mean at every n at once, so "the running
intersection ever excludes the true mean" must happen with probability <= alpha. For the betting
sequences that event is exactly "the hedged wealth at the true mean ever reaches 1/alpha", which
is cheap to simulate for thousands of sequences; the interval ends (grid-rounded) are checked by
a smaller simulation of the intervals themselves. References: a scalar loop written from the
paper's formulas (WS&R 2023, eq. 26 and Theorem 3) for the vectorised wealth, and scipy's
numerical integral of Robbins' normal mixture for the asymptotic radius. Naive repeated
fixed-n testing is simulated beside them to show that the simulation can detect an inflated
rate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stabstat.stats import sequential as Q

ALPHA = 0.05


def _mc_limit(p: float, sims: int) -> float:
    """Upper end for an observed rate whose true value is at most p (3 Monte-Carlo SE)."""
    return p + 3 * math.sqrt(p * (1 - p) / sims)


def _ever_excluded(x: np.ndarray, mean: float) -> np.ndarray:
    """Per simulated sequence (rows of x, in [0, 1]): did the hedged sequence ever exclude mean?"""
    p_up, p_down = Q.betting_p_values(x, mean, confidence=1 - ALPHA)
    return np.minimum(p_up, p_down).min(axis=-1) <= ALPHA


SHAPES = {
    # failure indicators at a 30% rate
    "bernoulli": (lambda rng, size: rng.binomial(1, 0.3, size).astype(float), 0.3),
    # a skewed bounded metric
    "beta": (lambda rng, size: rng.beta(2.0, 5.0, size), 2.0 / 7.0),
    # the fine-tuning shape: 30% of runs collapse to the majority 0.6, the rest near 0.85
    "mixture": (lambda rng, size: np.where(rng.random(size) < 0.3, 0.6,
                                           np.clip(rng.normal(0.85, 0.03, size), 0, 1)),
                0.3 * 0.6 + 0.7 * 0.85),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_betting_cs_is_time_uniform(shape: str) -> None:
    """10,000 sequences of 200 seeds each: the true mean is ever excluded in <= alpha of them."""
    draw, mean = SHAPES[shape]
    rng = np.random.default_rng(20)
    sims, n = 10_000, 200
    x = draw(rng, (sims, n))
    if shape == "mixture":  # the exact mean of the clipped normal is within 1e-9 of 0.85
        mean = float(0.3 * 0.6 + 0.7 * 0.85)
    rate = _ever_excluded(x, mean).mean()
    assert rate <= _mc_limit(ALPHA, sims)
    # and it is not vacuous: a mean 0.2 away (at n = 200 the CS is ~1.6x as wide as a Wald CI) is mostly excluded
    assert _ever_excluded(x, mean + 0.2).mean() > 0.9


def test_running_interval_covers_at_every_n() -> None:
    """The reported running intersection (grid-rounded ends) holds the mean at all n <= 60."""
    rng = np.random.default_rng(21)
    sims, n, p = 400, 60, 0.3
    misses = 0
    for _ in range(sims):
        cs = Q.rate_cs(rng.binomial(1, p, n), confidence=1 - ALPHA, grid=200)
        lows, highs = np.array(cs.lows), np.array(cs.highs)
        assert np.all(np.diff(lows) >= 0) and np.all(np.diff(highs) <= 0)  # an intersection only shrinks
        misses += bool(np.any((lows > p) | (highs < p)))
    assert misses / sims <= _mc_limit(ALPHA, sims)


def test_interval_matches_the_wealth_at_its_ends() -> None:
    """The interval after n runs excludes m exactly when the wealth at m has reached 2/alpha
    (up to the grid's rounding, which only widens it)."""
    rng = np.random.default_rng(22)
    x = rng.beta(2, 5, 80)
    cs = Q.betting_cs(x, confidence=0.9, grid=1000)
    for m in np.linspace(0.01, 0.99, 99):
        p_up, p_down = Q.betting_p_values(x, float(m), confidence=0.9)
        excluded = min(p_up.min(), p_down.min()) <= 0.1
        inside = cs.ci_low <= m <= cs.ci_high
        if excluded and inside:  # only allowed within one grid step of an end
            assert min(abs(m - cs.ci_low), abs(m - cs.ci_high)) <= 1e-3 + 1e-12
        if not excluded:
            assert inside


def _scalar_wealth(x: list[float], m: float, alpha: float, c: float = 0.5) -> tuple[list[float], list[float]]:
    """K^+_t(m), K^-_t(m) by the paper's recursions, one observation at a time."""
    ku, kd, up, down = 1.0, 1.0, [], []
    s, sq = 0.0, 0.0
    sig2_prev = 0.25
    for t, xi in enumerate(x, start=1):
        lam = math.sqrt(2 * math.log(2 / alpha) / (sig2_prev * t * math.log(1 + t)))
        lu = min(lam, c / m) if m > 0 else lam
        ld = min(lam, c / (1 - m)) if m < 1 else lam
        ku *= 1 + lu * (xi - m)
        kd *= 1 - ld * (xi - m)
        up.append(ku)
        down.append(kd)
        s += xi
        mu_t = (0.5 + s) / (t + 1)
        sq += (xi - mu_t) ** 2
        sig2_prev = (0.25 + sq) / (t + 1)
    return up, down


def test_wealth_matches_a_scalar_implementation_of_the_paper() -> None:
    rng = np.random.default_rng(23)
    x = rng.beta(2, 3, 50)
    for m in (0.0, 0.2, 0.4, 0.6, 1.0):
        up, down = Q.betting_log_wealth(x, [m], confidence=0.9)
        ref_up, ref_down = _scalar_wealth(list(x), m, 0.1)
        np.testing.assert_allclose(np.exp(up[0]), ref_up, rtol=1e-10)
        np.testing.assert_allclose(np.exp(down[0]), ref_down, rtol=1e-10)


def test_difference_cs_is_time_uniform_and_decides_under_an_alternative() -> None:
    """Failure rates 0.3 vs 0.3 (different shapes of the same mean for the metric): the
    difference 0 is ever excluded in <= alpha; 50% vs 0% (the demo) is decided, and the
    median number of seeds to decide is small."""
    rng = np.random.default_rng(24)
    sims, n = 10_000, 200
    a = rng.binomial(1, 0.3, (sims, n)).astype(float)
    b = rng.binomial(1, 0.3, (sims, n)).astype(float)
    d = (a - b + 1) / 2
    assert _ever_excluded(d, 0.5).mean() <= _mc_limit(ALPHA, sims)
    a = rng.binomial(1, 0.5, (2000, n)).astype(float)
    d = (a + 1) / 2
    p_up, _ = Q.betting_p_values(d, 0.5, confidence=1 - ALPHA)
    hit = p_up <= ALPHA
    assert hit.any(axis=1).mean() > 0.99
    first = np.argmax(hit, axis=1) + 1
    assert 10 <= np.median(first) <= 40  # measured: 20 seeds per arm


def test_betting_diff_cs_in_metric_units_and_pairs_in_order() -> None:
    cs = Q.betting_diff_cs(np.full(30, 0.9), np.full(30, 0.6), bounds=(0.0, 1.0))
    assert cs.estimate == pytest.approx(0.3)
    assert cs.ci_low <= 0.3 <= cs.ci_high and cs.ci_low > 0
    mcc = Q.betting_diff_cs(np.full(30, 0.5), np.full(25, -0.5), bounds=(-1.0, 1.0))
    assert mcc.n == 25 and mcc.bounds == (-2.0, 2.0) and mcc.ci_low > 0
    assert cs.excludes_from(0.0) is not None and cs.excludes_from(0.3) is None


def test_naive_repeated_testing_is_inflated() -> None:
    """What the sequences fix: a Wald z-test of the mean after every seed, 2..200, under the
    null, rejects far more often than alpha (the simulation can see an inflated rate)."""
    rng = np.random.default_rng(25)
    sims, n = 4000, 200
    x = rng.binomial(1, 0.3, (sims, n)).astype(float)
    t = np.arange(1, n + 1)
    mean = np.cumsum(x, axis=1) / t
    sd = np.sqrt(np.maximum(np.cumsum(x**2, axis=1) / t - mean**2, 1e-12))
    z = (mean - 0.3) / (sd / np.sqrt(t))
    naive = (np.abs(z[:, 9:]) > 1.96).any(axis=1).mean()  # from 10 seeds on
    assert naive > 3 * ALPHA


def test_asymptotic_radius_is_robbins_mixture_boundary() -> None:
    """At S_t = t * radius / sd the normal-mixture martingale equals 1/alpha (scipy quad)."""
    from scipy import integrate, stats

    alpha, t_opt = 0.05, 20
    la = -2 * math.log(alpha)
    rho = math.sqrt((la + math.log(la + 1)) / t_opt)
    for t in (5, 20, 100):
        s = t * float(Q.asymptotic_radius(t, 1.0, confidence=1 - alpha, t_opt=t_opt))
        m, _ = integrate.quad(lambda lam, s=s, t=t: math.exp(lam * s - lam**2 * t / 2) * stats.norm.pdf(lam, scale=rho),
                              -20, 20, points=[s / t])
        assert m == pytest.approx(1 / alpha, rel=1e-6)


def test_asymptotic_cs_coverage_on_normal_data() -> None:
    """Normal metric values (loss-like, unbounded): over n = 20..200 the running intersection
    misses the mean in <= alpha of 2,000 sequences (asymptotic validity: checked from 20 on)."""
    rng = np.random.default_rng(26)
    sims, n = 2000, 200
    x = rng.normal(3.0, 2.0, (sims, n))
    t = np.arange(1, n + 1)
    mean = np.cumsum(x, axis=1) / t
    sd = np.sqrt(np.maximum(np.cumsum(x**2, axis=1) / t - mean**2, 0))
    rad = Q.asymptotic_radius(t, sd, confidence=1 - ALPHA)
    miss = ((mean - rad)[:, 19:] > 3.0) | ((mean + rad)[:, 19:] < 3.0)
    assert miss.any(axis=1).mean() <= _mc_limit(ALPHA, sims)
    cs = Q.asymptotic_cs(x[0])
    assert cs.ci_low <= 3.0 <= cs.ci_high and cs.bounds is None
    assert Q.asymptotic_cs(x[0, :5]).warnings  # early: says it is approximate
    assert Q.asymptotic_diff_cs(x[0], x[1]).n == n


def test_bad_input_names_the_bound_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"outside the stated bounds \[0, 1\]; state bounds"):
        Q.betting_cs([0.5, 1.2])
    with pytest.raises(ValueError, match="low < high"):
        Q.betting_cs([0.5], bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="0/1"):
        Q.rate_cs([0, 0.5])
    with pytest.raises(ValueError, match="at least one run in each arm"):
        Q.betting_diff_cs([], [1.0])


# --------------------------------------------------------------------------- check --sequential

SEQ_CLAIMS = """
[defaults]
fail_below = 0.6
[[claims]]
name = "arm a fails more often than arm b"
kind = "failure_rate"
factor = "arm"
higher = "a"
lower = "b"
[[claims]]
name = "arm b has the higher mean accuracy"
kind = "mean"
factor = "arm"
higher = "b"
lower = "a"
[[claims]]
name = "arms b and c differ"
kind = "failure_rate"
factor = "arm"
higher = "b"
lower = "c"
"""


@pytest.fixture(scope="module")
def seq_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results table (one row per run, written by polars) of 3 arms x 60 seeds, ingested:
    arm a collapses to 0.5 in half of its runs (else ~0.9), arms b and c never fail."""
    import polars as pl

    from stabstat.ingest import ingest
    from stabstat.store import Store

    tmp = tmp_path_factory.mktemp("seq")
    rng = np.random.default_rng(30)
    rows = []
    for arm in ("a", "b", "c"):
        for seed in range(60):
            collapsed = arm == "a" and rng.random() < 0.5
            rows.append({"run_id": f"{arm}-{seed}", "arm": arm, "seed": seed,
                         "dev_accuracy": 0.5 if collapsed else float(np.clip(rng.normal(0.9, 0.02), 0, 1))})
    pl.DataFrame(rows).write_csv(tmp / "results.csv")
    db = tmp / "seq.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [tmp / "results.csv"], fmt="table")
        assert rep.ok, rep.summary()
    return db


def _claims(tmp_path: Path, text: str = SEQ_CLAIMS) -> Path:
    p = tmp_path / "claims.toml"
    p.write_text(text, "utf-8")
    return p


def test_check_sequential_decides_and_agrees_with_its_sequence(seq_db: Path, tmp_path: Path) -> None:
    from stabstat.claims import check
    from stabstat.store import Store

    with Store.open(seq_db) as store:
        res = check(store, _claims(tmp_path), sequential=True)
    v = {c.name: c for c in res.claims}
    a_fails, b_mean, b_vs_c = (v[n] for n in ("arm a fails more often than arm b",
                                               "arm b has the higher mean accuracy", "arms b and c differ"))
    assert [a_fails.verdict, b_mean.verdict, b_vs_c.verdict] == ["PASS", "PASS", "INCONCLUSIVE"]
    assert res.settings["correction"] == "bonferroni" and res.settings["sequential"] is True
    for c in (a_fails, b_mean):
        seq = c.sequence
        assert seq is not None and seq["decided_at"] is not None and seq["decided_at"] <= 60
        assert c.ci_low > 0 and c.p_adjusted == pytest.approx(min(1.0, 3 * c.p_value))
        # the stored sequence is the CS at alpha / 3: at its decision point it excludes 0
        assert seq["lows"][seq["decided_at"] - 1] > 0 and seq["lows"][seq["decided_at"] - 2] <= 0
    assert b_vs_c.sequence is not None and b_vs_c.sequence["decided_at"] is None
    assert b_vs_c.ci_low <= 0 <= b_vs_c.ci_high
    # the same evidence from the statistics package directly: failed indicators in seed order
    with Store.open(seq_db) as store:
        frame = store.query("SELECT arm, seed, value FROM evals JOIN runs USING (run_id) "
                            "WHERE metric = 'accuracy' ORDER BY seed")
    fa = (frame.filter(frame["arm"] == "a")["value"].to_numpy() < 0.6).astype(float)
    fb = (frame.filter(frame["arm"] == "b")["value"].to_numpy() < 0.6).astype(float)
    ref = Q.betting_diff_cs(fa, fb, confidence=1 - 0.05 / 3)
    assert a_fails.ci_low == pytest.approx(ref.ci_low) and a_fails.ci_high == pytest.approx(ref.ci_high)


def test_check_sequential_is_more_careful_than_fixed_n_on_few_seeds(seq_db: Path, tmp_path: Path) -> None:
    """On the first 8 seeds the fixed-n tests may already pass; the sequence, valid at every n,
    does not decide the failure-rate claim yet (1 claim: alpha 0.05)."""
    from stabstat.claims import check
    from stabstat.store import Store

    text = SEQ_CLAIMS.split("[[claims]]")[0] + "where = \"seed < 8\"\n[[claims]]" + SEQ_CLAIMS.split("[[claims]]")[1]
    with Store.open(seq_db) as store:
        seq = check(store, _claims(tmp_path, text), sequential=True)
    assert seq.claims[0].verdict == "INCONCLUSIVE" and seq.claims[0].n == {"a": 8, "b": 8}


def test_check_sequential_cli(seq_db: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from stabstat.cli import cli

    p = _claims(tmp_path)
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db), "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [t["verdict"] for t in out["tests"]] == ["PASS", "PASS", "INCONCLUSIVE"]
    assert "sequence" in out["tests"][0] and out["settings"]["correction"] == "bonferroni"
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db)])
    assert r.exit_code == 0 and "confidence sequence: excludes 0 from n = " in r.output
    assert "confidence sequence: does not exclude 0 yet" in r.output
    assert "confidence sequences, valid at every number of seeds" in r.output
    # without --sequential the JSON has no sequence (unchanged output)
    r = CliRunner().invoke(cli, ["check", str(p), "--db", str(seq_db), "--format", "json", "--resamples", "200"])
    assert "sequence" not in json.loads(r.output)["tests"][0]


def test_check_sequential_refuses_kinds_without_a_sequence(seq_db: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stabstat.cli import cli

    p = _claims(tmp_path, '[[claims]]\nkind = "std"\nfactor = "arm"\nhigher = "a"\nlower = "b"\n')
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db)])
    assert r.exit_code != 0 and "\n" not in r.output.strip()
    assert "kind 'std' has no confidence sequence" in r.output and "without --sequential" in r.output
    p = _claims(tmp_path, SEQ_CLAIMS.replace('higher = "b"\nlower = "a"', 'higher = "b"\nlower = "a"\nbounds = [0, 0.8]'))
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db)])
    assert r.exit_code != 0 and "outside the stated bounds [0, 0.8]" in r.output and "claim 2" in r.output


def test_check_sequential_funnel_chart(seq_db: Path, tmp_path: Path) -> None:
    """--chart: one funnel per claim (band of the running interval, boundary rule, and the
    stopping point for decided claims), written by the real vl-convert/Altair export."""
    import json

    from click.testing import CliRunner

    from stabstat.cli import cli

    p, out = _claims(tmp_path), tmp_path / "funnel.json"
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db), "--chart", str(out)])
    assert r.exit_code == 0, r.output
    spec = json.loads(out.read_text())
    panels = spec["vconcat"]
    assert len(panels) == 3
    titles = [pnl["title"] for pnl in panels]
    assert titles[0] == "PASS arm a fails more often than arm b" and titles[2].startswith("INCONCLUSIVE")
    assert [len(pnl["layer"]) for pnl in panels] == [3, 3, 2]  # no stopping rule while undecided
    svg = tmp_path / "funnel.svg"
    r = CliRunner().invoke(cli, ["check", str(p), "--sequential", "--db", str(seq_db), "--chart", str(svg)])
    assert r.exit_code == 0 and svg.read_text().lstrip().startswith("<svg")
    r = CliRunner().invoke(cli, ["check", str(p), "--db", str(seq_db), "--chart", str(out)])
    assert r.exit_code == 2 and "--chart draws confidence sequences: add --sequential" in r.output


def test_report_sequential_draws_each_claims_funnel(seq_db: Path, tmp_path: Path) -> None:
    """`report --claims F --sequential`: the claims are checked with confidence sequences (the
    verdicts of `check --sequential`) and the page gets the funnel figure; without
    --sequential neither; --sequential without --claims is a usage error."""
    from click.testing import CliRunner

    from stabstat.analysis import Selection, Settings
    from stabstat.cli import cli
    from stabstat.report import build_report
    from stabstat.store import Store

    claims = _claims(tmp_path)
    with Store.open(seq_db) as store:
        seq = build_report(store, by="arm", selection=Selection(split="dev"),
                           settings=Settings(resamples=200), claims=claims, sequential=True)
        fixed = build_report(store, by="arm", selection=Selection(split="dev"),
                             settings=Settings(resamples=200), claims=claims)
    ids = [f.id for f in seq.figures]
    assert ids[-1] == "claims-funnel" and "claims-funnel" not in [f.id for f in fixed.figures]
    panels = seq.figures[-1].spec()["vconcat"]
    assert [p["title"] for p in panels][0] == "PASS arm a fails more often than arm b"
    verdicts = [c["verdict"] for c in seq.data["claims"]["tests"]]
    assert verdicts == ["PASS", "PASS", "INCONCLUSIVE"]
    assert seq.data["claims"]["settings"]["sequential"] is True
    out = tmp_path / "r.html"
    r = CliRunner().invoke(cli, ["report", "--db", str(seq_db), "--by", "arm", "--split", "dev",
                                 "--resamples", "200", "--claims", str(claims), "--sequential",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert 'id="claims-funnel"' in out.read_text()
    r = CliRunner().invoke(cli, ["report", "--db", str(seq_db), "--sequential", "--out", str(out)])
    assert r.exit_code == 2 and "--sequential checks the claims of --claims FILE" in r.output


def test_check_chart_with_an_unknown_suffix_fails_before_checking(seq_db: Path, tmp_path: Path) -> None:
    """`check --sequential --chart f.pdf`: one line naming --chart and the formats, exit 2,
    nothing written (the suffix is checked before the claims are evaluated)."""
    from click.testing import CliRunner

    from stabstat.cli import cli

    out = tmp_path / "funnel.pdf"
    r = CliRunner().invoke(cli, ["check", str(_claims(tmp_path)), "--sequential", "--db", str(seq_db),
                                 "--chart", str(out)])
    assert r.exit_code == 2 and f"--chart {out}: cannot tell the format from the suffix" in r.output
    assert ".png, .svg, .json" in r.output and not out.exists()
