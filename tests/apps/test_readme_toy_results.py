"""The README's results of the toy Table 1 on the relational toy are the command's own files (``docs/toy_table/``):
its tables are copied verbatim from ``table1_toy.md`` and ``claims.md``, and every decimal number its prose quotes
is a value of ``table1_toy.csv``, ``per_seed.csv`` or ``claims.csv`` (as the tables print them: 2 decimals, or 3
for probabilities and p-values)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "toy_table"
HEADING = "### Results on the relational toy"
FILES = ("table1_toy.md", "table1_toy.csv", "per_seed.csv", "claims.md", "claims.csv", "strip.png", "dynamics.png")


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, f"README has no section {HEADING!r}"
    body = text.split(HEADING, 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _prose(section: str) -> str:
    """The section without its tables, code blocks, image lines and links' targets."""
    no_code = re.sub(r"```.*?```", "", section, flags=re.S)
    lines = [line for line in no_code.splitlines() if not line.startswith("|") and not line.startswith("![")]
    return re.sub(r"\]\([^)]*\)", "]", "\n".join(lines))


def _csv_numbers() -> set[str]:
    """Every numeric cell of the three CSVs, formatted with 2 and with 3 decimals."""
    out: set[str] = set()
    for name in ("table1_toy.csv", "per_seed.csv", "claims.csv"):
        with (RESULTS / name).open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for value in row.values():
                    try:
                        x = float(value)
                    except (TypeError, ValueError):
                        continue
                    out |= {f"{x:.2f}", f"{x:.3f}", f"{abs(x):.2f}", f"{abs(x):.3f}"}
    return out


@pytest.mark.parametrize("name", FILES)
def test_the_results_files_are_shipped(name: str) -> None:
    assert (RESULTS / name).is_file()


@pytest.mark.parametrize("name", ["table1_toy.md", "claims.md"])
def test_the_readme_tables_are_the_commands_tables(name: str) -> None:
    section_rows = _table_rows(_section())
    rows = _table_rows((RESULTS / name).read_text(encoding="utf-8"))
    assert rows, name
    start = section_rows.index(rows[0]) if rows[0] in section_rows else -1
    assert start >= 0, f"README's results section lacks {name}'s header row"
    assert section_rows[start : start + len(rows)] == rows


def test_every_decimal_the_prose_quotes_is_in_the_csvs() -> None:
    numbers = _csv_numbers()
    quoted = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", _prose(_section()))
    assert quoted, "the results prose quotes no figure"
    assert [q for q in quoted if q not in numbers] == []
