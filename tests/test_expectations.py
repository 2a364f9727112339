"""The per-profile expectations that notebooks' recorded results are tested against (tests/expectations.py)."""

import json

import pytest

from lmcls_helpers.profiles import PROFILES
from tests.expectations import EXPECTATIONS, unmet


def _results(tmp_path, **values):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(values))
    return path


def test_every_profile_has_its_expectations():
    assert set(EXPECTATIONS) == set(PROFILES)


def test_results_that_meet_the_bounds_pass(tmp_path):
    assert unmet("02_prompt_scoring", "tiny", _results(tmp_path, fewshot_dev_mcc=0.29)) == []
    assert unmet("03_quantization_inspection", "tiny", _results(tmp_path, nf4_perplexity_rise=-0.05)) == []
    assert unmet("03_quantization_inspection", "full", _results(tmp_path, nf4_perplexity_rise=None)) == []  # not measured
    assert unmet("06_last_token_head", "tiny", _results(tmp_path, head_bug_margin_mcc=0.3, head_bug_margin_sd=0.05)) == []
    assert unmet("02_prompt_scoring", "small", _results(tmp_path, fewshot_dev_mcc=-0.1)) == []
    assert unmet("04_training_loop", "small", _results(tmp_path, finetuned_gain_mcc=-0.1)) == []  # no gain expected
    assert unmet("01_tokens", "tiny", tmp_path / "absent.json") == []  # no expectations, no file needed


def test_a_missed_bound_names_the_notebook_key_value_and_bound(tmp_path):
    [(key, message)] = unmet("02_prompt_scoring", "tiny", _results(tmp_path, fewshot_dev_mcc=0.1234))
    assert key == "fewshot_dev_mcc"
    assert message.startswith("02_prompt_scoring: fewshot_dev_mcc = 0.1234 is not > 0.2")
    assert message.endswith("[profile tiny]")
    [(_, message)] = unmet("03_quantization_inspection", "TINY", _results(tmp_path, nf4_perplexity_rise=-0.25))
    assert "|nf4_perplexity_rise| = 0.25 is not < 0.1" in message


def test_a_margin_in_standard_deviations(tmp_path):
    found = unmet("06_last_token_head", "tiny", _results(tmp_path, head_bug_margin_mcc=0.2, head_bug_margin_sd=0.1))
    [(key, message)] = found
    assert key == "head_bug_margin_mcc"
    assert "head_bug_margin_mcc = 0.2 is not >= 0.3 = 3 x head_bug_margin_sd 0.1" in message
    found = unmet("06_last_token_head", "tiny", _results(tmp_path, head_bug_margin_mcc=-0.1, head_bug_margin_sd=0.0))
    assert [m.split(" (")[0] for _, m in found] == ["06_last_token_head: head_bug_margin_mcc = -0.1 is not > 0",
                                                    "06_last_token_head: head_bug_margin_mcc = -0.1 is not >= 0 "
                                                    "= 3 x head_bug_margin_sd 0"]


def test_an_unrecorded_number_fails(tmp_path):
    [(_, message)] = unmet("04_training_loop", "tiny", _results(tmp_path, finetuned_ood_mcc=0.5))
    assert "04_training_loop: finetuned_gain_mcc was not recorded" in message
    [(_, message)] = unmet("04_training_loop", "tiny", tmp_path / "absent.json")
    assert "04_training_loop: no results recorded (absent.json is missing)" in message


def test_an_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="No expectations for profile 'huge'"):
        unmet("02_prompt_scoring", "huge")


def test_a_notebook_that_runs_cleanly_but_misses_its_expectation_fails(tmp_root, monkeypatch):
    """conftest.py wraps nbmake's run: after the prose check, the recorded numbers meet the profile's bounds."""
    from nbmake.nb_run import NotebookRun

    monkeypatch.setenv("LMCLS_PROFILE", "tiny")
    record = ("from lmcls_helpers import results; results.start('02_prompt_scoring'); "
              "results.record('fewshot_dev_mcc', {})")
    nb = {"cells": [{"cell_type": "code", "source": "print('hello')", "metadata": {}, "execution_count": None,
                     "outputs": []},
                    {"cell_type": "code", "source": record.format(0.1), "metadata": {}, "execution_count": None,
                     "outputs": []}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_root / "02_prompt_scoring.ipynb"
    path.write_text(json.dumps(nb))
    result = NotebookRun(path, 120).execute()
    assert result.error is not None and result.error.failing_cell_index == 1
    assert "02_prompt_scoring: fewshot_dev_mcc = 0.1 is not > 0.2" in result.error.trace
    nb["cells"][1]["source"] = record.format(0.3)
    path.write_text(json.dumps(nb))
    assert NotebookRun(path, 120).execute().error is None
