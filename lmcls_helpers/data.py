"""Loading the data sets: CoLA (real or synthetic, same folder layout) and ledger lines.

The synthetic tiny-world data is written in exactly CoLA's raw layout (``raw/<split>.tsv``:
source, label, original marker, sentence; no header), so one loader serves both profiles.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pandas as pd

#: The file names inside ``cola_public/raw/``.
COLA_SPLITS = ("in_domain_train", "in_domain_dev", "out_of_domain_dev")
COLA_COLUMNS = ("source", "label", "marker", "sentence")
#: The zip the Llama 3 CoLA tutorial downloads (full profile only).
COLA_URL = "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip"


def read_cola_tsv(path: str | Path) -> pd.DataFrame:
    """One raw CoLA file as a DataFrame; a malformed line is an error naming file and line."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for line_no, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if fields in ([], [""]):
                continue
            problem = (f"expected 4 tab-separated fields (source, label, marker, sentence), found {len(fields)}: "
                       f"{fields!r}" if len(fields) != 4 else f"label must be 0 or 1, found {fields[1]!r}"
                       if fields[1] not in ("0", "1") else "the sentence is empty" if not fields[3].strip() else "")
            if problem:
                raise ValueError(f"{path}, line {line_no}: {problem}")
            rows.append((fields[0], int(fields[1]), fields[2], fields[3]))
    if not rows:
        raise ValueError(f"{path} holds no sentences; is it the right file?")
    return pd.DataFrame(rows, columns=list(COLA_COLUMNS))


def load_cola(root: str | Path) -> dict[str, pd.DataFrame]:
    """``{split: DataFrame}`` from an unzipped ``cola_public/`` folder (reads ``raw/``)."""
    raw = Path(root) / "raw"
    missing = [s for s in COLA_SPLITS if not (raw / f"{s}.tsv").exists()]
    if missing:
        raise FileNotFoundError(f"{raw} lacks {', '.join(s + '.tsv' for s in missing)}. For the tiny profile run "
                                "`make world`; for the full profile call `download_cola()` first.")
    return {split: read_cola_tsv(raw / f"{split}.tsv") for split in COLA_SPLITS}


def error_kinds(cola_root: str | Path) -> dict[str, pd.DataFrame] | None:
    """The synthetic splits' error ``kind`` and ``construction``, row-aligned with the TSVs; None for real CoLA."""
    if not (path := Path(cola_root) / "kinds.csv").exists():
        return None
    df = pd.read_csv(path, keep_default_na=False)
    return {name: g.drop(columns="split").reset_index(drop=True) for name, g in df.groupby("split", sort=False)}


def write_cola_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a split in CoLA's raw format (used for the synthetic set and for test fixtures)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df[list(COLA_COLUMNS)].astype({"label": int}).to_csv(path, sep="\t", header=False, index=False,
                                                         quoting=csv.QUOTE_NONE, lineterminator="\n")


def download_cola(dest: str | Path = ".", url: str = COLA_URL) -> Path:
    """Fetch and unzip the real CoLA (full profile); returns the ``cola_public/`` folder."""
    import urllib.request

    dest, folder = Path(dest), Path(dest) / "cola_public"
    if (folder / "raw" / "in_domain_train.tsv").exists():
        return folder
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(url).name
    if not archive.exists():
        partial = archive.with_name(archive.name + ".part")  # renamed only when complete
        try:
            urllib.request.urlretrieve(url, partial)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"Could not download CoLA from {url} ({err}). Without network access use the tiny profile.") from err
        partial.rename(archive)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    except zipfile.BadZipFile as err:
        raise RuntimeError(f"{archive} is not a valid zip (a broken download?): delete it and run again.") from err
    if not (folder / "raw" / "in_domain_train.tsv").exists():
        raise RuntimeError(f"{archive} did not unpack to {folder}/raw/: is {url} the CoLA archive?")
    return folder


def load_ledger(path: str | Path) -> pd.DataFrame:
    """Ledger lines (columns ``text``, ``label``: 0 = Expense, 1 = Income) for notebook 6."""
    if not (path := Path(path)).exists():
        raise FileNotFoundError(f"{path} is missing: run `make world` to build the synthetic ledger.")
    df = pd.read_csv(path)
    if list(df.columns[:2]) != ["text", "label"] or not df["label"].isin([0, 1]).all():
        raise ValueError(f"{path}: expected columns text,label with labels 0/1, found {list(df.columns)}.")
    return df
