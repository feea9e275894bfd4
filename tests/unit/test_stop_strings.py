"""Stop strings over streamed text: hold-back, chunk boundaries, overlaps, never partial output."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stator.errors import InvalidRequestError
from stator.frontend.stop_strings import StopCheck, StopStringMatcher


def _run(stops: Sequence[str], pieces: Sequence[str], **kwargs: bool) -> tuple[list[str], bool]:
    """Feed ``pieces``; return the text emitted per piece (then flush) and whether it stopped."""
    matcher = StopStringMatcher(stops, **kwargs)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return out, True
    return [*out, matcher.flush()], False


def _reference(stops: Sequence[str], text: str) -> tuple[str, bool]:
    """Brute force: cut at the shortest prefix that ends with a stop (longest stop on a tie)."""
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if text[:end].endswith(s)]
        if hits:
            return text[: end - max(map(len, hits))], True
    return text, False


def test_stop_in_one_piece_is_cut_and_not_emitted() -> None:
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("hello END world") == StopCheck("hello ", True)
    assert matcher.matched == "END"
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""


def test_stop_across_piece_boundaries_is_held_then_dropped() -> None:
    out, stopped = _run(["</s>"], ["abc<", "/", "s> tail"])
    assert out == ["abc", "", ""]
    assert stopped


def test_held_prefix_is_released_when_it_diverges() -> None:
    out, stopped = _run(["STOP"], ["go ST", "ART"])
    assert out == ["go ", "START", ""]
    assert not stopped


def test_flush_releases_held_text_at_end_of_stream() -> None:
    out, stopped = _run(["xyz"], ["abc x", "y"])
    assert out == ["abc ", "", "xy"]
    assert not stopped


def test_earliest_ending_stop_wins_and_longest_on_tie() -> None:
    assert _run(["bcd", "c"], ["abcd"])[0] == ["ab"]
    assert _run(["abcd", "bc"], ["a", "b", "c", "d"])[0] == ["", "", "a"]
    assert _run(["c", "bc"], ["abc"])[0] == ["a"]


def test_overlapping_candidates_hold_the_longest_possible_prefix() -> None:
    matcher = StopStringMatcher(["aab", "ab"])
    assert matcher.feed("xaa") == ("x", False)  # "aa" may start "aab"
    assert matcher.feed("a") == ("a", False)  # now "aa" still pending
    assert matcher.feed("b") == ("", True)
    assert matcher.matched == "aab"


def test_include_stop_str_in_output() -> None:
    assert _run(["END"], ["x E", "ND y"], include_stop_str_in_output=True) == (["x ", "END"], True)


def test_no_stops_passes_everything_through() -> None:
    assert _run([], ["a", "", "b"]) == (["a", "", "b", ""], False)


def test_empty_stop_string_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as err:
        StopStringMatcher(["ok", ""])
    assert err.value.param == "stop"


@settings(max_examples=400, deadline=None)
@given(
    stops=st.lists(st.text("abc", min_size=1, max_size=4), min_size=1, max_size=3),
    text=st.text("abc", max_size=24),
    data=st.data(),
)
def test_matches_reference_for_any_split_and_never_emits_past_it(
    stops: list[str], text: str, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    expected, expect_stop = _reference(stops, text)
    matcher = StopStringMatcher(stops)
    emitted, seen = "", ""
    for piece in pieces:
        seen += piece
        out, stopped = matcher.feed(piece)
        emitted += out
        assert expected.startswith(emitted)  # never a character that a stop later removes
        if not stopped:
            assert len(seen) - len(emitted) < max(map(len, stops))  # holds only what it must
        if stopped:
            break
    emitted += matcher.flush()
    assert (emitted, matcher.stopped) == (expected, expect_stop)
