"""The annotation step of SSG++ on one's own crops: a person labels the images drawn, one per global cluster.

The paper labels one image of each cluster (Fu et al., ICCV 2019); on a target without identities a person
does it. :class:`CsvLabeller` first writes the drawn images as numbered contact sheets
(``sheet_001.png``, ...) and a CSV template, ``index,file,person_id`` with ``person_id`` empty, then stops the
run (:class:`AnnotationNeeded`). Given the filled CSV it returns the labels: images given the same person id
(any text) share a label, in one of 0..K-1.

A filled CSV is checked against the images drawn: a row per number, each naming the file of its number, each
with a person id; a CSV written for another draw is refused as such. Excel's and LibreOffice's variants are
read too (a byte-order mark; ``;`` or tab between the columns).
"""
from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Sequence

import numpy as np

from reid.utils.data.preprocessor import Item
from reid.utils.errors import Pause, UserError
from reid.utils.osutils import write_atomically
from reid.utils.sheets import PER_PAGE, draw_numbered_sheet

TEMPLATE = "labels_template.csv"
SHEET = "sheet_{page:03d}.png"
COLUMNS = ("index", "file", "person_id")


class AnnotationNeeded(Pause):
    """Stops an SSG++ run once the images a person has to label are written; the message says where they are
    and how to go on. Not a failure: the run continues from its checkpoint with the filled CSV."""


def display_name(fname: str, root: str | None) -> str:
    """How the CSV names an image: its path relative to ``root`` when it lies inside, else as given (a run
    continued with the folder moved still matches its rows)."""
    if root is not None:
        root = os.path.abspath(root)
        path = os.path.abspath(fname)
        if os.path.commonpath([path, root]) == root:
            return os.path.relpath(path, root)
    return fname


def write_annotation_request(out_dir: str, fnames: Sequence[str], root: str | None = None, *,
                             per_page: int = PER_PAGE) -> tuple[list[str], str]:
    """Write the numbered contact sheets of ``fnames`` (numbers 1..N, ``per_page`` a sheet) and the CSV
    template under ``out_dir``, atomically.

    Returns
    -------
    sheets : list of str
        ``sheet_001.png``, ... in order.
    template : str
        ``labels_template.csv``: a row ``index,file,person_id`` per image, ``person_id`` empty.
    """
    if not fnames:
        raise ValueError("write_annotation_request: no image to label")
    os.makedirs(out_dir, exist_ok=True)
    template = os.path.join(out_dir, TEMPLATE)
    pages = -(-len(fnames) // per_page)
    sheets = []
    for page in range(pages):
        first = page * per_page
        numbers = list(range(first + 1, min(first + per_page, len(fnames)) + 1))
        title = (f"images to label {numbers[0]}-{numbers[-1]} of {len(fnames)} (sheet {page + 1} of {pages}): write "
                 f"each one's person id in {TEMPLATE}\nthe same id for the same person, any text")
        picture = draw_numbered_sheet(fnames[first:first + per_page], numbers, title)
        sheets.append(os.path.join(out_dir, SHEET.format(page=page + 1)))
        write_atomically(sheets[-1], functools.partial(picture.save, format="PNG"))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((number, display_name(fname, root), "") for number, fname in enumerate(fnames, start=1))

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as stream:
            stream.write(text.getvalue())

    write_atomically(template, write)
    return sheets, template


def read_annotations(fpath: str, fnames: Sequence[str], root: str | None = None) -> np.ndarray:
    """The labels a person gave the images ``fnames`` (numbered 1..N in this order) in the filled CSV ``fpath``.

    Returns
    -------
    ndarray of shape (N,), int64
        One label per image, in 0..K-1 for the K distinct person ids (in sorted order of the ids).

    Raises
    ------
    UserError
        One line naming ``fpath`` (and the line at fault): an unreadable file or header, a row whose number is
        not 1..N or repeats, whose file is not the one of its number, or without a person id; a number without
        a row; a CSV written for another draw.
    """
    rows = _read_rows(fpath)
    expected = [display_name(fname, root) for fname in fnames]
    if rows and not {file for _, _, file, _ in rows} & set(expected):
        raise UserError(f"{fpath}: none of its {len(rows)} files is among the {len(fnames)} images drawn for this run: "
                        "it was written for another draw; label the template this run wrote")
    person_of: dict[int, str] = {}
    line_of: dict[int, int] = {}
    for line, index_text, file, person in rows:
        try:
            index = int(index_text)
        except ValueError:
            index = 0
        if not 1 <= index <= len(fnames):
            raise UserError(f"{fpath} line {line}: index {index_text!r}: expected a number from 1 to {len(fnames)} "
                            "(one row per image of the sheets)")
        if index in line_of:
            raise UserError(f"{fpath} line {line}: image {index} has a row already (line {line_of[index]})")
        if file != expected[index - 1]:
            raise UserError(f"{fpath} line {line}: image {index} is {expected[index - 1]}, the row names {file}; keep "
                            "the template's index and file columns as written")
        if not person:
            raise UserError(f"{fpath} line {line}: image {index} ({file}) has no person_id; give every image one "
                            "(the same for the same person)")
        person_of[index], line_of[index] = person, line
    missing = [index for index in range(1, len(fnames) + 1) if index not in person_of]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{fpath}: no row for image {missing[0]} ({expected[missing[0] - 1]}){more}; expected one row "
                        f"per image, 1 to {len(fnames)}")
    people = [person_of[index] for index in range(1, len(fnames) + 1)]
    return np.unique(people, return_inverse=True)[1].astype(np.int64)


def _read_rows(fpath: str) -> list[tuple[int, str, str, str]]:
    """``(line, index, file, person_id)`` of each non-blank row, fields stripped."""
    try:
        with open(fpath, encoding="utf-8-sig", newline="") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{fpath}: cannot read the filled CSV ({exc})") from exc
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = [field.strip().lower() for field in next(reader, [])]
    if not set(COLUMNS) <= set(header):
        found = ",".join(header) or "none"
        raise UserError(f"{fpath}: expected the template's header {','.join(COLUMNS)}, found {found}")
    position = [header.index(column) for column in COLUMNS]
    rows = []
    for fields in reader:
        fields = [field.strip() for field in fields]
        if not any(fields):
            continue
        fields += [""] * (len(header) - len(fields))
        rows.append((reader.line_num, *(fields[p] for p in position)))
    return rows


class CsvLabeller:
    """SSG++'s labels from a person (:class:`reid.propagation.SemiSupervision`'s ``labeller``).

    Parameters
    ----------
    out_dir : str
        Where the sheets and the template are written (``<logs dir>/annotation``).
    items : sequence of Item
        The target's training images, which the labelled set's indices point into.
    labels_csv : str or None
        The filled CSV; None before a person has labelled: the call then writes the request and stops.
    root : str, optional
        The target's folder: the CSV names images relative to it.
    rerun : str
        What to do once the CSV is filled, appended to the stop message (the command to continue the run).
    """

    def __init__(self, out_dir: str, items: Sequence[Item], labels_csv: str | None, root: str | None = None,
                 rerun: str = ""):
        self.out_dir = out_dir
        self.items = items
        self.labels_csv = labels_csv
        self.root = root
        self.rerun = rerun

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """The labels of the images ``indices`` (the labelled set), read from the filled CSV.

        Raises
        ------
        AnnotationNeeded
            Without a filled CSV, once the sheets and the template are written.
        UserError
            For a filled CSV that does not fit these images (:func:`read_annotations`).
        """
        fnames = [self.items[i][0] for i in indices]
        if self.labels_csv is not None:
            return read_annotations(self.labels_csv, fnames, self.root)
        sheets, template = write_annotation_request(self.out_dir, fnames, self.root)
        shown = sheets[0]
        if len(sheets) > 1:
            shown = f"{len(sheets)} sheets, {sheets[0]} to {os.path.basename(sheets[-1])}"
        raise AnnotationNeeded(f"{len(fnames)} images to label (SSG++'s labelled set), numbered on {shown}; write "
                               f"each one's person id in {template} (the same id for the same person)"
                               + (f", then {self.rerun}" if self.rerun else ""))
