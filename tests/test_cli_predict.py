"""``cardioner predict`` as a newcomer meets it (issue 21): ``--show 0`` prints no table, only the count."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data.document import Document, Span
from cardioner.inference import entity_table

EXPORT = Path(__file__).resolve().parent / "fixtures" / "exports" / "linear"


def test_entity_table_shows_the_first_rows_and_says_how_many_more():
    docs = [Document("d1", "fever and cough", [Span(0, 5, "SYMPTOM"), Span(10, 15, "SYMPTOM")])]
    rows = entity_table(docs, limit=1).splitlines()
    assert rows[1].split() == ["d1", "0", "5", "SYMPTOM", "fever"] and rows[2:] == ["... 1 more"]
    assert entity_table(docs, limit=0) == "" and entity_table([Document("d2", "no entity")], limit=5) == ""


@pytest.mark.parametrize("show", ["0", "3"])
def test_predict_show_0_prints_only_the_count(tmp_path, show):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("The patient has fever and chest pain.\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", "--model", str(EXPORT), "--input", str(tmp_path / "in"),
                                      "--output", str(tmp_path / "out"), "--show", show])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    # one document: "1 document", never "1 documents"; the entities counted the same way
    assert f"in 1 document written to {tmp_path / 'out'} (brat); 1 document in " in lines[-1]
    entities = lines[-1].split(" in 1 document")[0]
    assert entities == "1 entity" or (entities.endswith(" entities") and entities != "1 entities")
    if show == "0":
        assert len(lines) == 1 and "label" not in result.stdout and "more" not in result.stdout
    else:
        assert lines[0].startswith("document") and "label" in lines[0]
