"""version.txt: every valid form is read back as written, every invalid one is refused clearly."""
import re

import pytest
from hypothesis import given, strategies as st

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.version import PARTS, Version, read_version, write_version

numbers = st.integers(min_value=0, max_value=10**6)
valid_texts = st.lists(numbers, min_size=1, max_size=4).map(lambda ns: ".".join(map(str, ns)))


@given(valid_texts, st.sampled_from(["", "\n", "  \n", "\r\n"]))
def test_every_dot_separated_number_is_a_version(text, trailer):
    v = Version.parse(text + trailer)
    assert v.text == text
    assert v.tag == "v" + text
    assert v.numbers == tuple(int(p) for p in text.split("."))


@given(st.text(max_size=12))
def test_anything_else_is_refused_with_the_bad_text(text):
    if re.fullmatch(r"[0-9]+(\.[0-9]+)*", text.strip()):
        return
    with pytest.raises(UserError) as err:
        Version.parse(text, origin="version.txt")
    assert "version.txt" in err.value.message
    assert "dot-separated numbers" in err.value.message


@pytest.mark.parametrize("bad", ["", "v1.0", "1..2", "1.2.", ".1", "1.a", "1,2", "1 .2", "one"])
def test_common_mistakes_are_refused(bad):
    with pytest.raises(UserError):
        Version.parse(bad)


def test_read_and_write_round_trip(tmp_path):
    write_version(tmp_path, Version("0.99"))
    assert (tmp_path / "version.txt").read_text() == "0.99\n"
    assert read_version(tmp_path) == Version("0.99")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing"):
        read_version(tmp_path)


@pytest.mark.parametrize("text,part,expected", [
    ("0.99", "minor", "0.100"), ("0.99", "major", "1.0"), ("0.99", "patch", "0.99.1"),
    ("1.2.3", "minor", "1.3.0"), ("1.2.3", "major", "2.0.0"), ("1.2.3", "patch", "1.2.4"), ("1", "minor", "1.1"),
])
def test_bump_keeps_the_form(text, part, expected):
    assert Version(text).bump(part).text == expected


@given(valid_texts, st.sampled_from(PARTS))
def test_bump_always_goes_up_and_stays_valid(text, part):
    before = Version.parse(text)
    after = before.bump(part)
    assert Version.parse(after.text) == after
    width = max(len(before.numbers), len(after.numbers))
    pad = lambda ns: ns + (0,) * (width - len(ns))  # noqa: E731
    assert pad(after.numbers) > pad(before.numbers)
    index = PARTS.index(part)
    assert after.numbers[:index] == pad(before.numbers)[:index]
    assert all(n == 0 for n in after.numbers[index + 1:])


def test_unknown_part_lists_the_valid_ones():
    with pytest.raises(UserError, match="major, minor, patch"):
        Version("1.0").bump("micro")
