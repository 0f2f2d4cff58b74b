"""SSG++'s annotation step on crops without identities: the numbered sheets and CSV template, the filled CSV read
back into labels (and every way it can be wrong, one line each), and SemiSupervision taking those labels."""
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reid.annotation import (
    TEMPLATE,
    AnnotationNeeded,
    CsvLabeller,
    display_name,
    read_annotations,
    write_annotation_request,
)
from reid.propagation import SemiSupervision
from reid.utils.errors import UserError

PEOPLE = ["ann", "bo", "ann", "cy", "bo", "dee", "ann"]


@pytest.fixture()
def drawn(tmp_path):
    """Seven crops, nested, odd names, one greyscale; the target's folder is ``crops``."""
    root = tmp_path / "crops"
    paths = []
    for index in range(len(PEOPLE)):
        path = root / f"cam {index % 2}" / f"Zoë {index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L" if index == 3 else "RGB", (6, 12), 60 + 20 * index).save(path)
        paths.append(str(path))
    return root, paths


def read_rows(fpath):
    with open(fpath, encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def fill(template, out, people, delimiter=",", encoding="utf-8", edit=None):
    """What a person does: a person id in every row (``edit`` then changes the rows)."""
    header, *rows = read_rows(template)
    rows = [[index, file, person] for (index, file, _), person in zip(rows, people)]
    rows = edit(rows) if edit else rows
    with open(out, "w", encoding=encoding, newline="") as stream:
        csv.writer(stream, delimiter=delimiter, lineterminator="\r\n").writerows([header, *rows])
    return out


def test_the_request_is_numbered_sheets_and_a_template_naming_files_in_the_target(drawn, tmp_path):
    root, paths = drawn

    sheets, template = write_annotation_request(str(tmp_path / "annotation"), paths, str(root), per_page=3)

    assert [s.rsplit("/", 1)[1] for s in sheets] == ["sheet_001.png", "sheet_002.png", "sheet_003.png"]
    assert template == str(tmp_path / "annotation" / TEMPLATE)
    assert read_rows(template) == [["index", "file", "person_id"]] + [
        [str(i + 1), f"cam {i % 2}/Zoë {i}.png", ""] for i in range(7)]
    with Image.open(sheets[2]) as last:
        assert last.format == "PNG" and last.width >= 480
    assert display_name("/elsewhere/x.jpg", str(root)) == "/elsewhere/x.jpg"


def test_a_filled_csv_gives_one_label_per_person(drawn, tmp_path):
    root, paths = drawn
    _, template = write_annotation_request(str(tmp_path), paths, str(root))

    labels = read_annotations(fill(template, tmp_path / "filled.csv", PEOPLE), paths, str(root))

    assert labels.tolist() == [0, 1, 0, 2, 1, 3, 0]  # ann bo cy dee, sorted
    # as a spreadsheet saves it: a byte-order mark, ';' between the columns, CRLF, rows reordered, a blank row
    excel = fill(template, tmp_path / "excel.csv", PEOPLE, delimiter=";", encoding="utf-8-sig",
                 edit=lambda rows: [*rows[::-1], ["", "", ""]])
    assert read_annotations(excel, paths, str(root)).tolist() == labels.tolist()


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:3] + rows[4:],
     r"filled.csv: no row for image 4 \(cam 1/Zoë 3.png\); expected one row per image, 1 to 7"),
    (lambda rows: rows[:2] + rows[3:5], r"no row for image 3 \(cam 0/Zoë 2.png\) and 2 more"),
    (lambda rows: [*rows, ["8", "cam 0/Zoë 2.png", "ann"]], r"line 9: index '8': expected a number from 1 to 7"),
    (lambda rows: [*rows, ["2", "cam 1/Zoë 1.png", "bo"]], r"line 9: image 2 has a row already \(line 3\)"),
    (lambda rows: [rows[0], ["2", "cam 1/renamed.png", "bo"], *rows[2:]],
     r"line 3: image 2 is cam 1/Zoë 1.png, the row names cam 1/renamed.png"),
    (lambda rows: [*rows[:5], ["6", "cam 1/Zoë 5.png", "  "], rows[6]],
     r"line 7: image 6 \(cam 1/Zoë 5.png\) has no person_id; give every image one"),
    (lambda rows: [[i, f"other/{i}.jpg", p] for i, _, p in rows],
     "none of its 7 files is among the 7 images drawn for this run: it was written for another draw"),
])
def test_a_wrong_csv_is_one_line(drawn, tmp_path, edit, message):
    root, paths = drawn
    _, template = write_annotation_request(str(tmp_path), paths, str(root))
    filled = fill(template, tmp_path / "filled.csv", PEOPLE, edit=edit)
    with pytest.raises(UserError, match=message) as error:
        read_annotations(str(filled), paths, str(root))
    assert "\n" not in str(error.value) and str(error.value).startswith(str(filled))


def test_a_csv_without_the_header_or_file_is_one_line(drawn, tmp_path):
    root, paths = drawn
    (tmp_path / "plain.csv").write_text("1,cam 0/Zoë 0.png,ann\n")
    with pytest.raises(UserError, match="plain.csv: expected the template's header index,file,person_id, found 1,"):
        read_annotations(str(tmp_path / "plain.csv"), paths, str(root))
    with pytest.raises(UserError, match="missing.csv: cannot read the filled CSV"):
        read_annotations(str(tmp_path / "missing.csv"), paths, str(root))


def test_the_labeller_stops_with_the_request_then_reads_the_filled_csv(drawn, tmp_path):
    root, paths = drawn
    items = [(path, -1, -1) for path in paths]
    out_dir = tmp_path / "logs" / "annotation"
    indices = np.array([1, 3, 4])

    with pytest.raises(AnnotationNeeded) as stop:
        CsvLabeller(str(out_dir), items, None, str(root), rerun="run again with --labels FILE")(indices)

    assert str(stop.value) == (f"3 images to label (SSG++'s labelled set), numbered on {out_dir}/sheet_001.png; "
                               f"write each one's person id in {out_dir}/{TEMPLATE} (the same id for the same person), "
                               "then run again with --labels FILE")
    filled = fill(out_dir / TEMPLATE, tmp_path / "filled.csv", ["x", "y", "x"])
    assert CsvLabeller(str(out_dir), items, str(filled), str(root))(indices).tolist() == [0, 1, 0]


def people_features(seed=1):
    """Three people, eight images each, pooled features (24, 2, 16) clustered by person."""
    rng = np.random.default_rng(seed)
    member = np.repeat(np.arange(3), 8)
    centres = F.normalize(torch.from_numpy(rng.normal(size=(3, 2, 16))).float(), dim=2)
    return member, centres[member] + 0.1 * torch.from_numpy(rng.normal(size=(24, 2, 16))).float()


def test_semi_supervision_takes_a_persons_labels_and_stops_every_rank_until_given(tmp_path):
    member, pooled = people_features()
    root = tmp_path / "crops"
    root.mkdir()
    items = []
    for i in range(24):
        Image.new("RGB", (6, 12), (10 * i, 0, 0)).save(root / f"{i}.jpg")
        items.append((str(root / f"{i}.jpg"), -1, -1))  # no identity known
    clusters = member.copy()
    out_dir = tmp_path / "annotation"
    shared = []

    def share(make):  # Runtime.share on one rank: the answer of rank 0, which every rank then acts on
        shared.append(make())
        return shared[-1]

    def supervision(labels_csv):
        labeller = CsvLabeller(str(out_dir), items, labels_csv, str(root))
        return SemiSupervision(str(tmp_path / "labelled_set.json"), items, "cluster", label_iteration=1,
                               iterations=3, share=share, labeller=labeller)

    assert supervision(None).select(0, clusters, pooled) is None
    with pytest.raises(AnnotationNeeded):
        supervision(None).select(1, clusters, pooled)
    assert isinstance(shared[-1][1], AnnotationNeeded)  # sent to every rank, not raised on rank 0 alone

    names = {row[1]: row[0] for row in read_rows(out_dir / TEMPLATE)[1:]}
    person = {f"{i}.jpg": f"person {'XYZ'[m]}" for i, m in enumerate(member)}
    filled = fill(out_dir / TEMPLATE, tmp_path / "filled.csv", [person[name] for name in names])
    selection = supervision(str(filled)).select(2, clusters, pooled)

    labelled = selection.indices[:3]
    assert sorted(member[labelled]) == [0, 1, 2]
    assert np.array_equal(selection.labels[:3], member[labelled])  # person X, Y, Z: labels 0, 1, 2
    assert np.array_equal(selection.labels, member[selection.indices])  # propagated to each person's images
    assert selection.true_ids is None
    assert selection.summary() == {"labelled": 3, "propagated": 21, "propagated_accuracy": None}  # all, at the last
