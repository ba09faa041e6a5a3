"""The duplicate bench's list of LFW people named twice: joined transitively, every name real."""

from pathlib import Path

import pytest

from facegate.benchmarks.duplicates import SAME_PERSON, same_person_names
from tests.conftest import shared_dataset


def test_pairs_join_transitively(tmp_path: Path) -> None:
    f = tmp_path / "same.csv"
    f.write_text("name_a,name_b,evidence\nA,B,x\nC,D,y\nB,C,z\n")
    names = same_person_names(f)
    assert {names[n] for n in "ABCD"} == {"A"}
    assert "E" not in names


def test_every_listed_name_is_an_lfw_folder() -> None:
    lfw = shared_dataset("lfw")
    names = same_person_names(SAME_PERSON)
    assert len(names) >= 12
    missing = [n for n in names if not (lfw / n).is_dir()]
    assert not missing, f"{SAME_PERSON.name}: not LFW people: {missing}"
    with pytest.raises(KeyError):
        names["Jason_Kapono"]  # a genuine false refusal in the 3,000 gallery stays one
