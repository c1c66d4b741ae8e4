"""The remembering transformer manager transforms every cell as IPython's does
(``subshell_kernel.adapter.transforms``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.inputtransformer2 import TransformerManager

from subshell_kernel.adapter.transforms import REMEMBERED_SIZE, RememberingTransformerManager

CELLS = [
    "pass", "", "\n\n  x = 1\n", "x?", "x??", "%time 1", "%%timeit\n1\n", "a = !ls", "b = %pwd",
    "!echo hi", ",f a b", ";f a b", "/f a b", ">>> 1 + 1\n... \n", "In [1]: x\n   ...: y\n",
    "def f(\n", "'''unclosed", "x = (1,\n", "print(1)\nx?\n", "\t\tindented\n\t\tmore\n",
]


@pytest.mark.parametrize("cell", CELLS)
def test_the_same_result_as_ipython_twice(cell):
    ours, theirs = RememberingTransformerManager(), TransformerManager()
    try:
        expected = theirs.transform_cell(cell)
    except Exception as e:
        with pytest.raises(type(e)):
            ours.transform_cell(cell)
        with pytest.raises(type(e)):
            ours.transform_cell(cell)
        return
    assert ours.transform_cell(cell) == expected
    assert ours.transform_cell(cell) == expected


@given(st.text(alphabet=st.sampled_from(list("ab1 =%!?,;/()'\"\n\t.:>[]IOut")), max_size=40))
@settings(max_examples=300, deadline=None, database=None)
def test_the_same_result_as_ipython_for_any_text(cell):
    ours, theirs = RememberingTransformerManager(), TransformerManager()
    try:
        expected = theirs.transform_cell(cell)
    except Exception:
        return
    assert ours.transform_cell(cell) == ours.transform_cell(cell) == expected


def test_a_changed_list_is_never_served_from_memory():
    ours = RememberingTransformerManager()
    assert ours.transform_cell("x = 1") == "x = 1\n"

    def shout(lines):
        return [line.upper() for line in lines]

    ours.cleanup_transforms.append(shout)
    assert ours.transform_cell("x = 1") == "X = 1\n"
    ours.cleanup_transforms.remove(shout)
    assert ours.transform_cell("x = 1") == "x = 1\n"
    ours.token_transformers.clear()
    assert ours.transform_cell("x?") == "x?\n"


def test_a_long_cell_is_transformed_but_not_kept():
    ours = RememberingTransformerManager()
    cell = "x = 1\n" * (REMEMBERED_SIZE // 6 + 1)
    assert ours.transform_cell(cell) == TransformerManager().transform_cell(cell)
    assert ours._remembered.cache_info().currsize == 0
