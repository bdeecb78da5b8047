"""``values.counted``: how every count a person reads is said ("1 document", "2 entities")."""

from __future__ import annotations

from cardioner.values import counted


def test_a_count_of_one_takes_the_singular_and_every_other_count_the_plural():
    assert counted(1, "document") == "1 document" and counted(2, "document") == "2 documents"
    assert counted(0, "span") == "0 spans" and counted(1, "span") == "1 span"
    assert counted(1, "entity") == "1 entity" and counted(2, "entity") == "2 entities"
    assert counted(3, "window") == "3 windows" and counted(1, "sentence") == "1 sentence"
    assert counted(2, "match") == "2 matches" and counted(2, "day") == "2 days"  # es after ch; a vowel + y
    assert counted(2, "predicted span") == "2 predicted spans"  # the last word takes the ending
    assert counted(1, "entity type") == "1 entity type" and counted(4, "entity type") == "4 entity types"
    assert counted(2, "criterion", "criteria") == "2 criteria" and counted(1, "criterion", "criteria") == (
        "1 criterion")
