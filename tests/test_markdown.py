"""The one Markdown-table writer (openmlip.markdown)."""
import pytest

from openmlip.markdown import markdown_table


def test_header_alignment_and_rows_as_f_strings_write_them():
    assert markdown_table(["a", "b"], [(1, True), ("x", "")], align="lr") == [
        "| a | b |", "| --- | ---: |", "| 1 | True |", "| x |  |"]
    assert markdown_table(["a"], []) == ["| a |", "| --- |"]


def test_a_table_without_headings_has_an_empty_header_row():
    assert markdown_table(None, [("k", "v")]) == ["| | |", "| --- | --- |", "| k | v |"]


def test_alignment_of_another_width_or_letter_is_refused():
    with pytest.raises(ValueError, match="one of 'l' or 'r' for each of the 2 columns"):
        markdown_table(["a", "b"], [], align="l")
    with pytest.raises(ValueError, match="one of 'l' or 'r'"):
        markdown_table(["a", "b"], [], align="lc")
