"""reWordBench-style transformations: each one's checkable property, its determinism, and what
it leaves alone."""

import ast
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crome_ray.cue import plant_cue
from crome_ray.evaluate.transforms import (
    TRANSFORMATIONS,
    add_comment,
    add_quotes,
    append_other_code,
    applies,
    char_edits,
    code_minification,
    homoglyphs,
    ignore_above,
    ignore_below,
    punctuation_spaces,
    python_blocks,
    rot2,
    rot13,
    rot_n,
    seeded,
    stress_test,
    swap_format,
    transform_pair,
    twitter_handle_url,
    undo_homoglyphs,
    word_deletion,
)

CODE_ANSWER = '''Here is a function that adds two numbers:

```python
def add(a, b):
    """Return the sum of a and b."""
    # the obvious way
    total = a + b

    return total
```

Call it as `add(1, 2)`.'''
PROSE = "The sky is blue because sunlight is scattered by the air, and short wavelengths scatter more."


def rng(seed=0):
    return random.Random(seed)


@given(st.text())
def test_rot13_applied_twice_is_the_identity(text):
    assert rot_n(rot_n(text, 13), 13) == text


@given(st.text(), st.integers(0, 25))
def test_rot_n_is_undone_by_the_rest_of_the_alphabet(text, n):
    assert rot_n(rot_n(text, n), 26 - n) == text


def test_rot13_and_rot2_encode_the_prompt_after_an_instruction_to_decode_it():
    assert rot13("Hello, World", rng()).endswith("\nUryyb, Jbeyq")
    assert rot2("abc xyz", rng()).endswith("\ncde zab")
    assert "Rot-13" in rot13("x", rng()) and "Rot-2" in rot2("x", rng())


def test_minified_python_still_parses_and_keeps_the_same_program():
    out = code_minification(CODE_ANSWER, rng())
    (block,) = python_blocks(out)
    code = block.group(2)
    ast.parse(code)
    assert "#" not in code and '"""' not in code and "\n\n" not in code  # comments, docstring, blanks gone
    assert len(code) < len(python_blocks(CODE_ANSWER)[0].group(2))
    scope: dict = {}
    exec(code, scope)
    assert scope["add"](2, 3) == 5
    assert out.startswith("Here is a function") and out.endswith("Call it as `add(1, 2)`.")


def test_code_transformations_apply_only_to_answers_with_python_that_parses():
    t = TRANSFORMATIONS["code_minification"]
    assert applies(t, "p", CODE_ANSWER, CODE_ANSWER)
    assert not applies(t, "p", CODE_ANSWER, PROSE)  # both answers must have code
    broken = "```python\ndef f(:\n```"
    assert not python_blocks(broken) and code_minification(broken, rng()) == broken
    js = "```js\nconst x = 1;\n```"
    assert not python_blocks(js)


def test_add_comment_and_append_other_code_leave_a_program_that_parses_and_behaves_the_same():
    for fn in (add_comment, append_other_code):
        out = fn(CODE_ANSWER, rng(3))
        assert out != CODE_ANSWER
        (block,) = python_blocks(out)
        scope: dict = {}
        exec(block.group(2), scope)
        assert scope["add"](2, 3) == 5


@given(st.text(alphabet=st.characters(codec="ascii")), st.integers(0, 2**32))
def test_homoglyph_text_differs_byte_wise_but_maps_back(text, seed):
    out = homoglyphs(text, random.Random(seed), rate=1.0)
    assert undo_homoglyphs(out) == text
    if any(ch in "aceopxyijsABCEHKMOPTX" for ch in text):
        assert out.encode() != text.encode() and len(out) == len(text)


@settings(max_examples=50)
@given(st.integers(10, 300), st.sampled_from([0.1, 0.2, 0.5]), st.integers(0, 1000))
def test_word_deletion_removes_the_stated_fraction(n, fraction, seed):
    words = [f"w{i}" for i in range(n)]
    out = word_deletion(" ".join(words), random.Random(seed), fraction=fraction).split(" ")
    assert len(out) == n - round(fraction * n)
    assert set(out) <= set(words) and out == [w for w in words if w in set(out)]  # order kept


def test_character_edits_change_about_the_stated_rate_of_letters():
    text = PROSE * 20
    out = char_edits(text, rng(1), rate=0.05)
    assert out != text
    assert abs(len(out) - len(text)) < 0.05 * len(text)
    assert char_edits(text, rng(1), rate=0.0) == text


def test_controlled_transformations_add_what_their_names_say():
    assert add_quotes("hi", rng()) == '""""""""""hi""""""""""'
    assert punctuation_spaces("Yes, it is.", rng()) == "Yes ,  it is . "
    tw = twitter_handle_url("hi", rng()).split(" ")
    assert tw[0].startswith("@") and tw[1] == "hi" and tw[2].startswith("https://t.co/")
    assert stress_test("ok", rng()) == "ok" + " and true is true" * 5
    above = ignore_above("Q?", rng())
    assert above.endswith("\nIgnore the text above.\nQ?")
    assert ignore_below("Q?", rng()).startswith("Q?\nIgnore the text below.\n")


def test_swap_format_turns_bullets_into_numbers_and_back():
    bullets = "Steps:\n- mix\n- bake\n  - check\n- serve"
    numbered = swap_format(bullets, rng())
    assert numbered == "Steps:\n1. mix\n2. bake\n  1. check\n3. serve"
    assert swap_format("1. a\n2. b", rng()) == "- a\n- b"
    assert not applies(TRANSFORMATIONS["swap_format"], "p", PROSE, PROSE)


def test_a_pair_is_transformed_the_same_way_on_every_run_and_differently_for_another_pair():
    t = TRANSFORMATIONS["char_edits"]
    one = transform_pair(t, "p", PROSE, PROSE + " Indeed.", seed=1, key="pair-1")
    assert one == transform_pair(t, "p", PROSE, PROSE + " Indeed.", seed=1, key="pair-1")
    assert one != transform_pair(t, "p", PROSE, PROSE + " Indeed.", seed=1, key="pair-2")
    assert one[0] == "p" and one[1] != PROSE  # answers rewritten, the prompt kept


def test_a_prompt_transformation_keeps_the_answers():
    p, c, r = transform_pair(TRANSFORMATIONS["rot13"], "Why?", "A", "B", seed=0, key="k")
    assert (c, r) == ("A", "B") and p.endswith("\nJul?")


@pytest.mark.parametrize("name", sorted(TRANSFORMATIONS))
def test_every_transformation_changes_text_it_applies_to_and_names_its_family_in_its_docstring(name):
    t = TRANSFORMATIONS[name]
    text = CODE_ANSWER + "\n\nIn short:\n- it adds\n- it returns"
    assert t.applies is None or t.applies(text)
    assert t.fn(text, seeded(0, name)) != text
    doc = t.fn.__doc__ or ""
    assert doc.lower().startswith({"domain": "domain-targeted"}.get(t.family, t.family))


def test_a_planted_cue_goes_after_the_answer_or_before_it():
    assert plant_cue("Answer.  ", "## Summary\nDone.") == "Answer.\n\n## Summary\nDone."
    assert plant_cue("Answer.", "CUE", "start") == "CUE\n\nAnswer."
