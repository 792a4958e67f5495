"""Reviewed labels: prepare relabels, drops and drops by hash; evaluate scores both label sets."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.evaluate import FiledTestSplit
from stages.label_fixes import load_corrections
from stages.params import Paths
from stages.prepare import PrepareConfig, prepare, split_of
from tests.helpers.photos import sample_photos

RATIOS = {"train": 0.5, "val": 0.1, "test": 0.4}
SEED = 7
FIXES_HEADER = "file,given_label,corrected_label,reason\n"
HASHES_HEADER = "sha256,example_file,reason\n"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    """12 committed photos of each class, in data/raw's layout."""
    folder = tmp_path / "raw"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for photo in sample_photos(label, 12):
            shutil.copy(photo, folder / label / photo.name)
    return folder


def in_test(raw: Path, label: str) -> list[Path]:
    """Photos of one class that the content hash puts in the test split."""
    files = sorted((raw / label).glob("*.jpg"))
    return [p for p in files if split_of(md5_of(p), SEED, RATIOS) == "test"]


def paths_with(raw: Path, out: Path, fixes: str | None, hashes: str | None) -> Paths:
    out.mkdir(parents=True, exist_ok=True)
    fixes_file = hashes_file = None
    if fixes is not None:
        fixes_file = out / "label_fixes.csv"
        fixes_file.write_text(fixes)
    if hashes is not None:
        hashes_file = out / "drop_hashes.csv"
        hashes_file.write_text(hashes)
    dirs = (out / n for n in ("prepared", "ckpt", "export", "m", "p"))
    return Paths(raw, *dirs, label_fixes=fixes_file, drop_hashes=hashes_file)


def run(paths: Paths) -> dict:
    return prepare(paths, PrepareConfig(["cat", "dog"], 64, RATIOS, 32), SEED)


def test_prepare_relabels_drops_and_drops_known_placeholders_by_hash(
    raw: Path, tmp_path: Path
) -> None:
    relabel, dropped = in_test(raw, "cat")[:2]
    placeholder = in_test(raw, "dog")[0]
    baseline = run(paths_with(raw, tmp_path / "plain", None, None))
    # The placeholder's bytes also sit under another name in the other class: both go.
    copy = raw / "cat" / "placeholder_copy.jpg"
    shutil.copy(placeholder, copy)
    sha = hashlib.sha256(placeholder.read_bytes()).hexdigest()
    fixes = (
        FIXES_HEADER
        + f"cat/{relabel.name},cat,dog,a dog filed as a cat\n"
        + f"cat/{dropped.name},cat,drop,no animal\n"
    )
    hashes = HASHES_HEADER + f"{sha},dog/{placeholder.name},photo unavailable placeholder\n"
    paths = paths_with(raw, tmp_path / "fixed", fixes, hashes)
    metrics = run(paths)

    assert metrics["label_fixes"] == {
        "relabelled": {"train": 0, "val": 0, "test": 1},
        "dropped": {"train": 0, "val": 0, "test": 1},
        "dropped_by_hash": {"train": 0, "val": 0, "test": 2},
        "rows_not_found": 0,
    }
    assert metrics["skipped_by_reason"] == {"known_placeholder": 2, "label_fix_drop": 1}
    assert metrics["files"] == metrics["kept"] + metrics["skipped"] == 25
    test = metrics["split"]["test"]
    assert test["total"] == baseline["split"]["test"]["total"] - 2  # two photos, three files
    assert test["cat"] == baseline["split"]["test"]["cat"] - 2  # one relabelled, one dropped

    manifest = pd.read_csv(paths.manifest).set_index("file")
    assert manifest.loc[f"cat/{relabel.name}", ["label", "original_label"]].tolist() == [
        "dog",
        "cat",
    ]
    assert not {f"cat/{dropped.name}", f"dog/{placeholder.name}", "cat/placeholder_copy.jpg"} & set(
        manifest.index
    )
    rows = manifest[manifest["split"] == "test"].sort_values("index")
    labels = np.load(paths.split_labels("test"))
    original = np.load(paths.split_original_labels("test"))
    assert labels.tolist() == [["cat", "dog"].index(x) for x in rows["label"]]
    assert original.tolist() == [["cat", "dog"].index(x) for x in rows["original_label"]]
    assert int((labels != original).sum()) == 1
    # The dropped test photos stay beside the split, with their filed labels (cat, dog).
    assert np.load(paths.dropped_images("test")).shape == (2, 64, 64, 3)
    assert sorted(np.load(paths.dropped_labels("test")).tolist()) == [0, 1]


def test_evaluate_scores_the_reviewed_and_the_filed_labels_side_by_side(
    raw: Path, tmp_path: Path
) -> None:
    relabel, dropped = in_test(raw, "cat")[:2]
    fixes = FIXES_HEADER + f"cat/{relabel.name},cat,dog,beagle\ncat/{dropped.name},cat,drop,x\n"
    paths = paths_with(raw, tmp_path / "fixed", fixes, None)
    run(paths)
    images = np.load(paths.split_images("test"), mmap_mode="r")
    labels = np.load(paths.split_labels("test"))
    filed = FiledTestSplit.load(paths, labels, images.shape[1:])
    # A model that always answers the filed label: perfect on the filed labels only.
    probs = np.eye(2)[filed.original]
    dropped_probs = np.eye(2)[filed.dropped_labels]
    report = filed.accuracy(probs, dropped_probs)
    assert report == {
        "accuracy_original_labels": 1.0,
        "n_original_labels": len(labels) + 1,
        "test_labels_corrected": 1,
        "test_photos_dropped": 1,
    }
    assert (probs.argmax(1) == labels).mean() == pytest.approx(1 - 1 / len(labels))
    # Its mistakes on the dropped photo count against it on the filed labels.
    assert filed.accuracy(probs, 1 - dropped_probs)["accuracy_original_labels"] < 1.0


def test_data_prepared_before_the_review_counts_as_unreviewed(tmp_path: Path) -> None:
    paths = paths_with(tmp_path, tmp_path / "old", None, None)
    labels = np.array([0, 1, 1])
    filed = FiledTestSplit.load(paths, labels, (8, 8, 3))
    report = filed.accuracy(np.eye(2)[[0, 1, 0]], np.empty((0, 2)))
    assert report["accuracy_original_labels"] == round(2 / 3, 6)
    assert report["test_photos_dropped"] == report["test_labels_corrected"] == 0


def test_a_row_naming_no_photo_is_reported_not_fatal(raw: Path, tmp_path: Path) -> None:
    fixes = FIXES_HEADER + "cat/99999.jpg,cat,dog,reviewed on another range of photos\n"
    metrics = run(paths_with(raw, tmp_path / "out", fixes, None))
    assert metrics["label_fixes"]["rows_not_found"] == 1
    assert metrics["label_fix_rows_not_found"] == ["cat/99999.jpg"]
    assert metrics["kept"] == 24
    json.dumps(metrics)  # prepare.json stays writable


def test_a_row_whose_given_label_disagrees_with_the_folder_stops_prepare(
    raw: Path, tmp_path: Path
) -> None:
    name = sorted((raw / "cat").glob("*.jpg"))[0].name
    fixes = FIXES_HEADER + f"cat/{name},dog,cat,reviewed against other data\n"
    with pytest.raises(SystemExit, match=f"cat/{name} is filed under 'cat'"):
        run(paths_with(raw, tmp_path / "out", fixes, None))


@pytest.mark.parametrize(
    ("fixes", "message"),
    [
        ("file,label,reason\ncat/1.jpg,cat,x\n", r"label_fixes.csv:1: the header must be"),
        (FIXES_HEADER + "cat/1.jpg,cat,dog\n", r"label_fixes.csv:2: 3 fields, expected 4"),
        (FIXES_HEADER + "cat/1.jpg,cat,dog,\n", r"label_fixes.csv:2: every field is required"),
        (FIXES_HEADER + "cat/1.jpg,cat,bird,x\n", r"label_fixes.csv:2: corrected_label 'bird'"),
        (FIXES_HEADER + "cat/1.jpg,cow,dog,x\n", r"label_fixes.csv:2: given_label 'cow'"),
        (FIXES_HEADER + "cat/1.jpg,cat,cat,x\n", r"label_fixes.csv:2: .* not a fix"),
        (
            FIXES_HEADER + "cat/1.jpg,cat,dog,x\ncat/1.jpg,cat,drop,y\n",
            r"label_fixes.csv:3: cat/1.jpg has a second row",
        ),
        ("", r"label_fixes.csv:1: the header must be"),
    ],
)
def test_a_malformed_fixes_file_is_refused_with_its_line(
    tmp_path: Path, fixes: str, message: str
) -> None:
    paths = paths_with(tmp_path, tmp_path / "out", fixes, None)
    with pytest.raises(SystemExit, match=message):
        load_corrections(paths.label_fixes, None, ["cat", "dog"])


def test_a_malformed_hash_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    paths = paths_with(tmp_path, tmp_path / "out", None, HASHES_HEADER + "abc123,cat/1.jpg,x\n")
    with pytest.raises(SystemExit, match=r"drop_hashes.csv:2: 'abc123' is not a sha256"):
        load_corrections(None, paths.drop_hashes, ["cat", "dog"])
    with pytest.raises(SystemExit, match=r"nowhere\.csv not found"):
        load_corrections(tmp_path / "nowhere.csv", None, ["cat", "dog"])


def test_the_committed_corrections_are_well_formed() -> None:
    """data/label_fixes.csv and data/drop_hashes.csv, as prepare reads them."""
    root = Path(__file__).resolve().parents[2]
    corrections = load_corrections(
        root / "data/label_fixes.csv", root / "data/drop_hashes.csv", ["cat", "dog"]
    )
    assert corrections.fixes and corrections.drop_hashes
    assert all(len(fix.reason) > 5 for fix in corrections.fixes.values())
