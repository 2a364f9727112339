"""lmcls_tools.report: the prose check, the check of executed notebooks, and the summary ``make run`` ends with."""

import json

import pytest

from lmcls_tools import report


def test_summary_is_one_short_line_per_notebook(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    many = {f"a_rather_long_key_number_{i}": 0.123456789 * i for i in range(40)}
    recorded = {
        "02_prompt_scoring": {"fewshot_dev_mcc": 0.2912345, "fewshot_ood_mcc": -0.05, "ablation": {"x": 1.0}},
        "04_training_loop": {"resume_matches": True, "finetuned_ood_mcc": 0.4, "finetuned_gain_mcc": 0.1},
        "99_a_notebook_with_a_very_long_name_indeed": many,
        "01_tokenizer_subtleties": {"llama3_label_ids": [22281, 44085], "llama3_prompt_tokens": 86},
    }
    for name, values in recorded.items():
        (folder / f"{name}.json").write_text(json.dumps(values))
    lines = report.summary(folder)
    assert len(lines) == len(recorded) <= 25 and all(len(line) <= 100 for line in lines)
    assert [line.split()[0] for line in lines] == sorted(recorded)[:3] + ["99_a_notebook_with_a_very_long"]
    assert "fewshot_dev_mcc 0.291" in lines[1] and "ablation" not in lines[1]
    assert "llama3_label_ids 22281/44085" in lines[0]
    assert report.summary(tmp_path / "none") == ["(no results recorded yet)"]


def test_make_run_ends_in_at_most_25_short_lines(tmp_root, capsys):
    results = tmp_root / "build" / "results"
    results.mkdir(parents=True)
    for n in range(1, 9):
        (results / f"0{n}_notebook.json").write_text(json.dumps({f"key_{i}": i / 7 for i in range(30)}))
    (tmp_root / "executed").mkdir()
    assert report.main([str(tmp_root / "executed")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 25 and max(map(len, lines)) <= 100
    assert sum(line.startswith("0") for line in lines) == 8


def _notebook(path, outputs):
    cell = {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": outputs}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_check_executed_counts_inline_figures_and_finds_paths_and_reprs(tmp_root):
    executed, figures = tmp_root / "executed", tmp_root / "figures"
    executed.mkdir()
    figures.mkdir()
    (figures / "07_a.png").write_bytes(b"png")
    (figures / "07_b.png").write_bytes(b"png")
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    _notebook(executed / "07_demo.ipynb", [image, image])
    assert report.check_executed(executed, figures) == []
    path_echo = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                 "data": {"text/plain": f"PosixPath('{tmp_root}/build/figures/07_a.png')"}}
    _notebook(executed / "07_demo.ipynb", [image, path_echo])
    found = report.check_executed(executed, figures)
    assert any("1 inline figure(s) but 2 saved" in f for f in found)
    assert any(str(tmp_root) in f for f in found) and any("PosixPath(" in f for f in found)


def test_check_executed_finds_a_progress_bar_frame(tmp_root):
    executed, figures = tmp_root / "executed", tmp_root / "figures"
    executed.mkdir()
    figures.mkdir()
    frame = {"output_type": "display_data", "metadata": {},
             "data": {"text/plain": "scoring:   0%|          | 0/8 [00:00<?, ?it/s]"}}
    _notebook(executed / "02_demo.ipynb", [frame])
    assert any("progress bar" in f for f in report.check_executed(executed, figures))
    text = {"output_type": "stream", "name": "stdout", "text": "accuracy 71.6% | MCC 0.372 | 500/500 sentences\n"}
    _notebook(executed / "02_demo.ipynb", [text])
    assert report.check_executed(executed, figures) == []



def _cells(prose: str, printed: str, profile: str = "tiny") -> list[dict]:
    header = {"output_type": "stream", "name": "stdout", "text": f"profile: {profile}   model: build/{profile}/model\n"}
    out = {"output_type": "stream", "name": "stdout", "text": printed}
    return [{"cell_type": "code", "source": "", "outputs": [header, out]},
            {"cell_type": "markdown", "source": prose}]


@pytest.mark.parametrize("printed", ["accuracy 0.5778\n", "accuracy 57.78%\n", "57.8% one at a time\n"])
def test_a_quote_matches_a_printed_number_that_rounds_to_it(printed):
    prose = "On the tiny profile this run printed 57.8% one line at a time."
    assert report.unprinted_quotes(_cells(prose, printed)) == []


def test_a_stale_quote_is_named_with_its_cell():
    prose = "Intro. On the tiny profile this run printed macro-F1 0.291 (plain) and -0.66 (seed 43)."
    found = report.unprinted_quotes(_cells(prose, "macro-F1 0.235, MCC -0.747\n"))
    assert [index for index, _ in found] == [1, 1]
    assert "0.291" in found[0][1] and "-0.66" in found[1][1]


def test_bounds_sentences_about_other_worlds_and_other_profiles_are_not_quotes():
    printed = "span 0.02\n"
    assert report.unprinted_quotes(_cells("On the tiny profile within about 0.05 MCC, less than 10%.", printed)) == []
    assert report.unprinted_quotes(_cells("Llama 3 reached 0.555 on the full profile.", printed)) == []
    assert report.unprinted_quotes(_cells("On the tiny profile 0.291.", printed, profile="small")) == []


def test_make_test_fails_a_notebook_whose_prose_quotes_an_unprinted_number(tmp_path):
    """conftest.py wraps nbmake's run: a notebook that runs cleanly but quotes a stale number fails."""
    from nbmake.nb_run import NotebookRun

    nb = {"cells": [{"cell_type": "code", "source": "print('profile: tiny   x'); print('MCC 0.235')", "metadata": {},
                     "execution_count": None, "outputs": []},
                    {"cell_type": "markdown", "source": "On the tiny profile this run printed MCC 0.291.", "metadata": {}}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "stale.ipynb"
    path.write_text(json.dumps(nb))
    result = NotebookRun(path, 120).execute()
    assert result.error is not None and "0.291" in result.error.trace and result.error.failing_cell_index == 1
    nb["cells"][1]["source"] = "On the tiny profile this run printed MCC 0.235."
    path.write_text(json.dumps(nb))
    assert NotebookRun(path, 120).execute().error is None


def test_an_objects_repr_in_an_output_is_found():
    cells = [{"cell_type": "code", "source": "torch.manual_seed(0)",
              "outputs": [{"data": {"text/plain": "<torch._C.Generator at 0x7f0>"}}]},
             {"cell_type": "code", "source": "print(1)", "outputs": [{"text": "1\n"}]}]
    assert [index for index, _ in report.unreadable_outputs(cells)] == [0]
