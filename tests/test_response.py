"""The response contract: official examples, format check, round trip, adversarial strings."""

import re

import pytest

from preferthinker.profile import ELEMENTS, canonical_key, canonicalize_profile, parse_profile_string, profile_to_string, split_terms
from preferthinker.prompting import official_system_prompt
from preferthinker.response import parse_response, render_response

PREF = {"Art Styles": "Pixel Art", "Color": "Pink", "Artistic Medium": "Silkscreen", "Saturation": "Muted", "Detail": "Fine"}
NONPREF = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor", "Saturation": "Intense", "Detail": "Smooth"}


def official_examples() -> list[str]:
    return re.findall(r'output example \d:\n"(.*?</answer>)"', official_system_prompt(), re.S)


def test_official_example_1():
    a = parse_response(official_examples()[0])
    assert a.format_ok and a.single_blocks and a.consistent
    assert a.scores_a == [2, 1, 2, 3, 3] and a.total_a == 11
    assert a.scores_b == [5, 5, 4, 4, 4] and a.total_b == 22
    assert a.answer == "Image B"
    assert a.preference == {"Art Styles": "Mesoamerican Art", "Color": "Pink", "Artistic Medium": "Coiling", "Saturation": "Muted", "Detail": "Realistic"}
    assert a.non_preference["Artistic Medium"] == "Digital Painting"  # written "ArtisticMedium" in the prompt
    assert a.rationales_a[0].startswith("The clustered botanical forms")


def test_official_example_2():
    a = parse_response(official_examples()[1])
    assert a.format_ok and a.consistent
    assert a.scores_a == [4, 4, 4, 5, 4] and a.total_a == 21
    assert a.scores_b == [3, 2, 2, 2, 3] and a.total_b == 12
    assert a.answer == "Image A"
    assert a.preference["Color"] == "Alloy Silver" and a.non_preference["Art Styles"] == "Romanticism"


def test_round_trip_with_rationales_and_multi_terms():
    pref = dict(PREF, **{"Art Styles": "Pixel Art, Watercolor"})
    ra = [f"rationale a{i}, with commas; and semicolons." for i in range(5)]
    rb = [f"rationale b{i}" for i in range(5)]
    text = render_response(pref, NONPREF, [5, 4, 3, 3, 4], [1, 2, 3, 3, 2], ra, rb)
    a = parse_response(text)
    assert a.format_ok and a.single_blocks and a.consistent
    assert a.preference == pref and a.non_preference == NONPREF
    assert a.scores_a == [5, 4, 3, 3, 4] and a.scores_b == [1, 2, 3, 3, 2]
    assert a.rationales_a == ra and a.rationales_b == rb
    assert (a.total_a, a.total_b, a.answer) == (19, 11, "Image A")
    assert split_terms(a.preference["Art Styles"]) == ["Pixel Art", "Watercolor"]


def test_round_trip_without_rationales_and_explicit_tie_answer():
    text = render_response(PREF, NONPREF, [3] * 5, [3] * 5, answer="Image B")
    a = parse_response(text)
    assert a.format_ok and a.answer == "Image B" and a.scores_a == [3] * 5 and a.rationales_a == [""] * 5
    assert not a.consistent  # a tie cannot justify either answer
    with pytest.raises(ValueError, match="tie"):
        render_response(PREF, NONPREF, [3] * 5, [3] * 5)


@pytest.mark.parametrize(
    "bad",
    [
        dict(scores_a=[6, 1, 1, 1, 1]),  # out of range
        dict(scores_a=[1, 1, 1, 1]),  # too few
        dict(rationales_a=["Image B(5) sneaks in"] + [""] * 4),  # score marker in a rationale
        dict(rationales_b=["<answer>Image A</answer>"] + [""] * 4),  # a tag in a rationale
        dict(answer="Image C"),
    ],
)
def test_render_rejects_bad_input(bad):
    kwargs = dict(preference=PREF, non_preference=NONPREF, scores_a=[5] * 5, scores_b=[1] * 5)
    kwargs.update(bad)
    with pytest.raises(ValueError):
        render_response(**kwargs)


GOOD = render_response(PREF, NONPREF, [5, 4, 3, 3, 4], [1, 2, 3, 3, 2])


@pytest.mark.parametrize(
    "text, format_ok",
    [
        (GOOD, True),
        (" " + GOOD, False),  # leading whitespace: official fullmatch fails
        (GOOD + "\n", False),  # trailing whitespace
        ("Sure! " + GOOD, False),  # text outside the blocks
        (GOOD.replace("</think>\n\n<answer>", "</think>\nextra\n<answer>"), False),  # text between blocks
        (GOOD.replace("<think>", "<thinking>").replace("</think>", "</thinking>"), False),  # wrong tag
        (GOOD.split("<answer>")[0].rstrip(), False),  # no answer block
        ("\n\n".join(GOOD.split("\n\n<visual non-preference profile>")[::-1]), False),  # blocks out of order
    ],
)
def test_format_ok_matches_official_check(text, format_ok):
    assert parse_response(text).format_ok is format_ok


def test_last_answer_wins_and_multiple_blocks_are_flagged():
    text = GOOD + "<answer>Image B</answer>"
    a = parse_response(text)
    assert a.answer == "Image B"  # the last <answer>, as the official scorer takes it
    assert a.format_ok  # the official regex accepts this ...
    assert not a.single_blocks  # ... which is why rewards also require single blocks


@pytest.mark.parametrize(
    "inside, expected",
    [("Image A", "Image A"), (" image b. ", "Image B"), ("Image A or Image B", None), ("Image A/Image B", None), ("", None), ("A", None)],
)
def test_answer_normalisation(inside, expected):
    assert parse_response(f"<answer>{inside}</answer>").answer == expected


@pytest.mark.parametrize("text", ["", "garbage", "<think>", "<answer>", "<think>1. Color:\nImage A(9) - x;\nImage B(1) - y.</think>", "\x00" * 10, "<" * 1000, None, 12345])
def test_parse_never_raises(text):
    a = parse_response(text)
    assert a.answer is None and a.scores_a is None and not a.format_ok


def test_missing_pieces_are_none():
    text = GOOD.replace('"Detail": "Fine"', "")  # preference loses one element
    text = text.replace("Image A: total_score=5+4+3+3+4=19\n", "")
    a = parse_response(text)
    assert a.preference is None and a.non_preference == NONPREF
    assert a.total_a is None and a.total_b == 11
    assert a.scores_a == [5, 4, 3, 3, 4]


def test_tolerant_spellings_in_profiles_and_think():
    text = (
        "<visual preference profile>\nArt Style: Pixel Art\nColour: Pink\nArtisticMedium: Silkscreen\nSaturation: Muted\nDetails: Fine\n</visual preference profile>\n"
        "<visual non-preference profile>\"art styles\": \"Cubism\", \"color\": \"Teal\", \"artistic medium\": \"Watercolor\", \"saturation\": \"Intense\", \"detail\": \"Smooth\"</visual non-preference profile>\n"
        "<think>\n1. Art Styles:\nImage A (4): good;\nImage B [2] - bad.\n2. Colour:\nImage A(5) - a;\nImage B(1) - b.\n3. Medium:\nImage A(3) - a;\nImage B(3) - b.\n"
        "4. Saturation:\nImage A(4) - a;\nImage B(2) - b.\n5. Detail:\nImage A(4) - a;\nImage B(2) - b.\nTotal:\nImage A: total_score = 4+5+3+4+4 = 20\nImage B: total_score=2+1+3+2+2=10\n</think>\n<answer>Image A</answer>"
    )
    a = parse_response(text)
    assert a.preference == PREF and a.non_preference == NONPREF
    assert a.scores_a == [4, 5, 3, 4, 4] and a.scores_b == [2, 1, 3, 2, 2]
    assert a.total_a == 20 and a.total_terms_a == [4, 5, 3, 4, 4] and a.consistent


def test_inconsistent_totals_detected():
    text = GOOD.replace("=19", "=25")
    assert not parse_response(text).consistent


def test_profile_helpers():
    assert canonical_key("ArtisticMedium") == "Artistic Medium" and canonical_key("mood") is None
    s = profile_to_string({"ArtisticMedium": "Coiling", "Art Style": "Pixel Art, Watercolor", "Color": "Pink", "Saturation": "Muted", "Detail": "Fine"})
    assert s == "Art Styles: Pixel Art, Watercolor, Color: Pink, Artistic Medium: Coiling, Saturation: Muted, Detail: Fine"
    assert parse_profile_string(s)["Art Styles"] == "Pixel Art, Watercolor"
    assert list(canonicalize_profile(s)) == list(ELEMENTS)
    with pytest.raises(ValueError, match="Detail"):
        canonicalize_profile({"Art Styles": "a", "Color": "b", "Artistic Medium": "c", "Saturation": "d"})


def test_section_notes_sit_under_each_heading_and_are_skipped_by_the_parser():
    notes = [f"note {i}: A shows x, B shows y." for i in range(5)]
    text = render_response(PREF, NONPREF, [5, 4, 3, 3, 4], [1, 2, 3, 3, 2], ["ra"] * 5, ["rb"] * 5, section_notes=notes)
    assert "1. Artistic style:\nnote 0: A shows x, B shows y.\nImage A(5) - ra;" in text
    a = parse_response(text)
    assert a.format_ok and a.consistent and a.scores_b == [1, 2, 3, 3, 2] and a.rationales_a == ["ra"] * 5
    with pytest.raises(ValueError, match="section notes"):
        render_response(PREF, NONPREF, [5] * 5, [1] * 5, section_notes=["x"] * 4)
    with pytest.raises(ValueError, match="heading"):
        render_response(PREF, NONPREF, [5] * 5, [1] * 5, section_notes=["Colour:"] * 5)
    with pytest.raises(ValueError):
        render_response(PREF, NONPREF, [5] * 5, [1] * 5, section_notes=["Image B(1) sneaks a score in"] * 5)


def test_think_preamble_is_skipped_by_the_parser_and_checked():
    pre = "Image A shows: Pixel Art, Pink, Silkscreen, Muted, Fine.\nImage B shows: Cubism, Teal, Watercolor, Intense, Smooth."
    a = parse_response(render_response(PREF, NONPREF, [5, 4, 3, 3, 4], [1, 2, 3, 3, 2], think_preamble=pre))
    assert a.format_ok and a.consistent and a.scores_a == [5, 4, 3, 3, 4] and a.rationales_a == [""] * 5
    with pytest.raises(ValueError, match="heading"):
        render_response(PREF, NONPREF, [5] * 5, [1] * 5, think_preamble="Candidates:")
    with pytest.raises(ValueError):
        render_response(PREF, NONPREF, [5] * 5, [1] * 5, think_preamble="Image A(5) sneaks a score in")
