"""stabstat check: claims files, verdicts, family-wise correction, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_analysis import build_db

from stabstat.analysis import Settings
from stabstat.errors import ConfigError

CLAIMS = """
[defaults]
filter = { task = "rte" }
resamples = 500
seed = 3

[[claims]]
name = "bias correction lowers the failure rate"
kind = "failure_rate"
factor = "bias_correction"
higher = false
lower = true

[[claims]]
name = "SD is higher without bias correction"
kind = "std"
factor = "bias_correction"
higher = "false"
lower = "true"

[[claims]]
name = "failure falls with n_train"
kind = "failure_trend"
factor = "n_train"
direction = "decreasing"
filter = { bias_correction = false }

[[claims]]
name = "bias correction fails at most 30%"
kind = "max_failure_rate"
value = 0.3
filter = { bias_correction = true }

[[claims]]
name = "wrong: mean accuracy is higher without bias correction"
kind = "mean"
factor = "bias_correction"
higher = false
lower = true
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("claims"))


@pytest.fixture
def store(db: Path):  # type: ignore[no-untyped-def]
    from stabstat.store import Store

    with Store.open(db) as s:
        yield s


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "claims.toml"
    p.write_text(text)
    return p


def test_verdicts(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from stabstat.claims import check

    res = check(store, write(tmp_path, CLAIMS))
    verdicts = [c.verdict for c in res.claims]
    # The trend (3/3, 2/3, 1/3, 0/3 failures) is suggestive but not significant after Holm.
    assert verdicts == ["PASS", "PASS", "INCONCLUSIVE", "PASS", "FAIL"]
    assert not res.ok and res.counts() == {"PASS": 3, "FAIL": 1, "INCONCLUSIVE": 1}
    fr = res.claims[0]
    assert fr.estimate == 0.5 and fr.n == {"false": 12, "true": 12}  # TOML's spelling (issue 17 item 14)
    assert fr.p_adjusted >= fr.p_value
    assert res.claims[4].detail.endswith("(paired by seed)")
    assert res.settings["resamples"] == 500 and res.settings["seed"] == 3 and res.settings["correction"] == "holm"
    d = res.to_dict()
    assert d["groups"] == [] and all(t["test"] == "claim" for t in d["tests"])


def test_holm_across_claims_matches_multipletests(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from statsmodels.stats.multitest import multipletests

    from stabstat.claims import check

    res = check(store, write(tmp_path, CLAIMS))
    p = [c.p_value for c in res.claims]
    expected = multipletests(p, method="holm")[1]
    assert [c.p_adjusted for c in res.claims] == pytest.approx(list(expected))
    none = check(store, write(tmp_path, CLAIMS), correction="none")
    assert [c.p_adjusted for c in none.claims] == pytest.approx(p)


def test_same_seed_same_result(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from stabstat.claims import check

    path = write(tmp_path, CLAIMS)
    a = check(store, path).to_dict()
    b = check(store, path).to_dict()
    assert a == b
    c = check(store, path, settings=Settings(resamples=500, seed=99)).to_dict()
    assert c["settings"]["seed"] == 99


@pytest.mark.parametrize("text,match", [
    ("[[claims]]\nkind = 'vibes'\n", "kind 'vibes' is not one of"),
    ("[[claims]]\nkind = 'failure_rate'\nfactor = 'x'\nhigher = 1\n", "needs the field 'lower'"),
    ("[[claims]]\nkind = 'mean'\nfactor = 'x'\nhigher = 1\nlower = 2\ncolour = 'red'\n", "unknown key"),
    ("[defaults]\nalpha = 0.05\nfoo = 1\n[[claims]]\nkind = 'max_failure_rate'\nvalue = 0.1\n", r"\[defaults\]: unknown"),
    ("[[claims]]\nkind = 'max_failure_rate'\nvalue = 2\n", "between 0 and 1"),
    ("[[claims]]\nkind = 'failure_trend'\nfactor = 'n_train'\ndirection = 'up'\n", "direction"),
    ("x = [\n", "not valid TOML"),
    ("", "no claims"),
])
def test_bad_claims_files(tmp_path: Path, text: str, match: str) -> None:
    from stabstat.claims import load_claims

    with pytest.raises(ConfigError, match=match):
        load_claims(write(tmp_path, text))


def test_unknown_level_names_the_claim_and_levels(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from stabstat.claims import check

    text = "[[claims]]\nname = 'typo'\nkind = 'mean'\nfactor = 'bias_correction'\nhigher = 'yes'\nlower = true\n"
    with pytest.raises(ConfigError, match=r"claim 1 \('typo'\): higher = 'yes' is not a level.*False, True"):
        check(store, write(tmp_path, text))


def test_unknown_factor_in_claim(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from stabstat.claims import check
    from stabstat.errors import SelectionError

    text = "[[claims]]\nkind = 'failure_rate'\nfactor = 'recipe'\nhigher = 'a'\nlower = 'b'\n"
    with pytest.raises(SelectionError, match="claim 1: unknown factor 'recipe'"):
        check(store, write(tmp_path, text))


def test_successful_only_and_median_claims(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from stabstat.claims import check

    text = """
[defaults]
resamples = 400
correction = "bh"

[[claims]]
name = "failed runs drive the SD gap"
kind = "std"
factor = "bias_correction"
higher = false
lower = true
successful_only = true

[[claims]]
name = "median higher with bias correction"
kind = "median"
factor = "bias_correction"
higher = true
lower = false
"""
    res = check(store, write(tmp_path, text))
    sd, med = res.claims
    assert sd.n == {"false": 6, "true": 12} and "(successful runs)" in sd.detail
    assert sd.verdict == "INCONCLUSIVE"  # without the failed runs the SDs are alike
    assert med.verdict == "PASS" and med.estimate > 0
    assert res.settings["correction"] == "bh"


def test_claims_settings_merges_in_one_place() -> None:
    """One precedence rule, field by field (issue 17 item 11; this test pinned the old two
    forms): command line > the file's [defaults] > Settings' defaults. A whole Settings
    (Python API) replaces the file's values; correction given as an argument still wins."""
    from stabstat.claims import claims_settings

    defaults = {"resamples": 400, "seed": 3, "correction": "bh"}
    assert claims_settings(defaults) == Settings(resamples=400, seed=3, correction="bh")
    assert claims_settings(defaults, overrides={"seed": 7, "resamples": None}) == Settings(
        resamples=400, seed=7, correction="bh")
    assert claims_settings(defaults, overrides={"ci_method": "percentile", "correction": "none"}) == Settings(
        resamples=400, seed=3, ci_method="percentile", correction="none")
    assert claims_settings({}, overrides={"confidence": 0.9}) == Settings(confidence=0.9)
    given = Settings(resamples=900, seed=1, ci_method="percentile", confidence=0.9, correction="none")
    assert claims_settings(defaults, settings=given) == given
    assert claims_settings(defaults, settings=given, correction="holm").correction == "holm"
    with pytest.raises(ValueError, match="unknown override"):
        claims_settings(defaults, overrides={"alpha": 0.1})
