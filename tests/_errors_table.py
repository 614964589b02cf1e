"""The catalogue table in ``docs/errors.md``: rendered from ``test_bad_input.CASES``, parsed back.

``test_bad_input.test_the_docs_table_is_the_catalogue`` compares the documented ids,
inputs and error types with the catalogue, and checks each documented message
against its case's regex. After changing the catalogue, rewrite the table with::

    .venv/bin/python tests/_errors_table.py

which runs every case in a scratch folder and writes the messages it got (paths
under the scratch folder read ``$TMP``, object addresses ``0x…``).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"
HEADER = "| id | input | error type | message |\n|---|---|---|---|"


def expected_rows() -> list[tuple[str, str, str]]:
    """(id, input, error type) of every case, in catalogue order."""
    from test_bad_input import CASES

    return [(c.id, c.input, c.error.__name__) for c in CASES]


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _uncell(text: str) -> str:
    return text.strip().replace("\\|", "|")


def parse(doc: str) -> list[tuple[str, str, str, str]]:
    """The (id, input, error type, message) rows between the catalogue markers of ``doc``."""
    if START not in doc or END not in doc:
        return []
    block = doc.split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in block.strip().splitlines()[2:]:  # skip the header and the rule
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        if len(cells) != 4:
            raise ValueError(f"a catalogue row needs 4 cells: {line!r}")
        name, given, error, message = (_uncell(c) for c in cells)
        rows.append((name.strip("`"), given, error.strip("`"), message))
    return rows


def normalize(message: str, tmp: str) -> str:
    message = message.replace(os.path.realpath(tmp), "$TMP").replace(tmp, "$TMP")
    return re.sub(r"0x[0-9a-f]+", "0x…", message)


def render(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [HEADER]
    for name, given, error, message in rows:
        lines.append(f"| `{name}` | {_cell(given)} | `{error}` | {_cell(message)} |")
    return "\n".join(lines)


def main() -> None:
    import test_bad_input as catalogue

    old = {row[0]: row[3] for row in parse(DOC.read_text())}
    rows = []
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        for i, c in enumerate(catalogue.CASES):
            if c.skip:  # this machine cannot show it: keep what the table said
                rows.append((c.id, c.input, c.error.__name__, old.get(c.id, "(not run here)")))
                continue
            tmp = Path(scratch) / str(i)
            tmp.mkdir()
            os.chdir(tmp)
            try:
                err = catalogue.run_case(c, catalogue.Ctx(tmp))
            finally:
                os.chdir(here)
            if type(err) is not c.error or not re.search(c.message, catalogue.full_message(err)):
                sys.exit(f"{c.id}: got {type(err).__name__}: {catalogue.full_message(err)}")
            rows.append((c.id, c.input, c.error.__name__, normalize(catalogue.full_message(err), str(tmp))))
    doc = DOC.read_text()
    table = f"{START}\n{render(rows)}\n{END}"
    if START in doc:
        doc = doc.split(START, 1)[0] + table + doc.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + table + "\n"
    DOC.write_text(doc)
    print(f"{len(rows)} rows written to {DOC}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.argv[0] = os.path.abspath(sys.argv[0])  # the cases chdir; a launcher looks for this script
    main()
