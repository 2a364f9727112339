import pandas as pd
import pytest

from lmcls_helpers.data import COLA_SPLITS, load_cola, load_ledger, read_cola_tsv, write_cola_tsv


def write_fixture(root, lines_by_split):
    raw = root / "cola_public" / "raw"
    raw.mkdir(parents=True)
    for split, lines in lines_by_split.items():
        (raw / f"{split}.tsv").write_text("".join(line + "\n" for line in lines))
    return root / "cola_public"


GOOD = ["gj04\t1\t\tThe dog barks.", "gj04\t0\t*\tThe dog bark.", "clc95\t1\t\tHe said \"hi\"."]


def test_load_cola_reads_every_split(tmp_path):
    root = write_fixture(tmp_path, {s: GOOD for s in COLA_SPLITS})
    splits = load_cola(root)
    assert set(splits) == set(COLA_SPLITS)
    df = splits["in_domain_train"]
    assert list(df.columns) == ["source", "label", "marker", "sentence"]
    assert df["label"].tolist() == [1, 0, 1]
    assert df["marker"].tolist() == ["", "*", ""]
    assert df["sentence"][2] == 'He said "hi".'  # quotes are data, not CSV quoting


@pytest.mark.parametrize(
    "bad, message",
    [
        ("gj04\t1\tThe dog barks.", "line 2: expected 4 tab-separated fields"),
        ("gj04\tyes\t\tThe dog barks.", "line 2: label must be 0 or 1"),
        ("gj04\t1\t\t  ", "line 2: the sentence is empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "in_domain_dev.tsv"
    path.write_text(GOOD[0] + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=message) as err:
        read_cola_tsv(path)
    assert str(path) in str(err.value)


def test_missing_split_names_the_fix(tmp_path):
    root = write_fixture(tmp_path, {"in_domain_train": GOOD})
    with pytest.raises(FileNotFoundError, match="in_domain_dev.tsv.*make world"):
        load_cola(root)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("")
    with pytest.raises(ValueError, match="holds no sentences"):
        read_cola_tsv(path)


def test_write_then_read_round_trips(tmp_path):
    df = pd.DataFrame({"source": ["a", "b"], "label": [1, 0], "marker": ["", "*"], "sentence": ["X y.", "Y x."]})
    write_cola_tsv(df, tmp_path / "raw" / "s.tsv")
    pd.testing.assert_frame_equal(read_cola_tsv(tmp_path / "raw" / "s.tsv"), df)


def test_ledger_schema_is_checked(tmp_path):
    good = tmp_path / "ok.csv"
    good.write_text("text,label\nPlus: Deposit 10.00,1\n")
    assert load_ledger(good)["label"].tolist() == [1]
    bad = tmp_path / "bad.csv"
    bad.write_text("line,kind\nx,Income\n")
    with pytest.raises(ValueError, match="expected columns text,label"):
        load_ledger(bad)
    with pytest.raises(FileNotFoundError, match="make world"):
        load_ledger(tmp_path / "missing.csv")


def make_cola_zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for split in COLA_SPLITS:
            z.writestr(f"cola_public/raw/{split}.tsv", "".join(line + "\n" for line in GOOD))
    return path


def test_download_cola_fetches_and_unpacks_the_zip(tmp_path):
    from lmcls_helpers.data import download_cola

    url = make_cola_zip(tmp_path / "cola_public_1.1.zip").as_uri()  # a file:// URL stands in for the web
    folder = download_cola(tmp_path / "dest", url=url)
    assert folder == tmp_path / "dest" / "cola_public"
    assert load_cola(folder)["in_domain_dev"]["label"].tolist() == [1, 0, 1]
    assert not list((tmp_path / "dest").glob("*.part")), "a finished download leaves no partial file"
    assert download_cola(tmp_path / "dest", url="file:///nonexistent.zip") == folder  # present: no second download


def test_download_cola_errors_name_the_fix(tmp_path):
    from lmcls_helpers.data import download_cola

    with pytest.raises(RuntimeError, match="Could not download CoLA.*tiny profile"):
        download_cola(tmp_path / "a", url=(tmp_path / "missing.zip").as_uri())
    assert not list((tmp_path / "a").glob("*")), "a failed download leaves nothing behind"
    broken = tmp_path / "b" / "cola_public_1.1.zip"
    broken.parent.mkdir()
    broken.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="not a valid zip.*delete it"):
        download_cola(tmp_path / "b", url="file:///unused/cola_public_1.1.zip")
