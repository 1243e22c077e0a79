import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqwidgets.keyframes import format_keyframes, keyframe_at, parse_keyframes


def test_parses_the_node_default_text():
    text = (
        "0:A portrait of a rosebud\n5:A portrait of a blooming rosebud\n"
        "10:A portrait of a blooming rose\n15:A portrait of a rose"
    )
    assert parse_keyframes(text) == [
        (0, "A portrait of a rosebud"),
        (5, "A portrait of a blooming rosebud"),
        (10, "A portrait of a blooming rose"),
        (15, "A portrait of a rose"),
    ]


def test_whitespace_colons_comments_and_order():
    text = "\n  # a comment\n 8 :  a blue square  \n\n0: a red circle: with a colon\n#3: skipped\n"
    assert parse_keyframes(text) == [(0, "a red circle: with a colon"), (8, "a blue square")]


def test_empty_prompt_after_colon_is_allowed():
    assert parse_keyframes("0:") == [(0, "")]


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n  # another"])
def test_empty_text_is_the_empty_prompt(text):
    assert parse_keyframes(text) == [(0, "")]


def test_line_without_index_names_field_line_and_text():
    with pytest.raises(ValueError) as err:
        parse_keyframes("0: a cat\n\n a dog without index", field="positive_seq")
    message = str(err.value)
    assert "positive_seq" in message
    assert "line 3" in message
    assert "a dog without index" in message


@pytest.mark.parametrize("line", ["x: cat", "-1: cat", "1.5: cat", "cat 3: dog"])
def test_malformed_prefixes_are_errors(line):
    with pytest.raises(ValueError, match="line 2"):
        parse_keyframes(f"0: start\n{line}")


def test_duplicate_index_names_both_lines():
    with pytest.raises(ValueError) as err:
        parse_keyframes("0: a\n4: b\n04: c", field="negative_seq")
    message = str(err.value)
    assert "negative_seq" in message
    assert "line 3" in message
    assert "line 2" in message
    assert "04: c" in message


def test_missing_loop_zero_is_an_error():
    with pytest.raises(ValueError) as err:
        parse_keyframes("# intro\n3: late start\n7: later", field="positive_seq")
    message = str(err.value)
    assert "positive_seq" in message
    assert "line 2" in message
    assert "loop 0" in message
    assert "3: late start" in message


def test_non_string_is_an_error():
    with pytest.raises(ValueError, match="positive_seq"):
        parse_keyframes(["0: a"], field="positive_seq")


def test_keyframe_at_holds_the_last_keyframe():
    keyframes = [(0, "a"), (3, "b"), (5, "c")]
    assert [keyframe_at(keyframes, i) for i in range(7)] == ["a", "a", "a", "b", "b", "c", "c"]
    with pytest.raises(ValueError):
        keyframe_at([(2, "x")], 1)


prompts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20
).map(str.strip)


@given(
    st.dictionaries(st.integers(1, 2000), prompts, max_size=8),
    prompts,
)
def test_format_then_parse_round_trips(rest, first):
    keyframes = sorted({0: first, **rest}.items())
    assert parse_keyframes(format_keyframes(keyframes)) == keyframes
