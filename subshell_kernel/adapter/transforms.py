"""IPython's static input transformations, remembered for recent cells.

Before a cell runs, IPython rewrites its IPython syntax (``%magic``, ``!cmd``,
``x?``, prompts, indentation) into Python: ``TransformerManager.transform_cell``,
which tokenizes the cell (Python's ``tokenize``, in Python) at least once.
That is 50-90 us for ``pass`` on the reference machine and grows with the
cell (a few ms for a long one), paid again each time the same cell runs.

The default transformations are pure functions of the cell's text (IPython
9: the prompt and indentation strippers, ``%%`` cell magics, and the token
transformers for ``=%``, ``=!``, escaped commands and ``?``), so while the
transformer lists hold exactly the defaults that ``TransformerManager``
built, the result for a text seen recently is the result computed then.  Once
anything changes a list (an extension registers its own transformer, which
may depend on more than the text), every cell is transformed afresh, as
IPython does; a list put back as it was is remembered again.

Only the static stage is remembered: the dynamic one (``prefilter``, for
single-line cells: automagic, autocall, macros) depends on the namespace and
runs every time, in ``InteractiveShell.transform_cell``.
"""

from __future__ import annotations

import functools

from IPython.core.inputtransformer2 import TransformerManager

#: recent cells remembered, and the longest one remembered (characters)
REMEMBERED = 256
REMEMBERED_SIZE = 1 << 16


class RememberingTransformerManager(TransformerManager):
    """``TransformerManager`` whose ``transform_cell`` remembers recent results."""

    def __init__(self) -> None:
        super().__init__()
        self._defaults = self._lists()
        # lru_cache: thread-safe (subshells transform cells at once), bounded, and a
        # cell that raises is not remembered
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(
            functools.partial(TransformerManager.transform_cell, self)
        )

    def _lists(self) -> tuple[tuple, tuple, tuple]:
        return (tuple(self.cleanup_transforms), tuple(self.line_transforms),
                tuple(self.token_transformers))

    def transform_cell(self, cell: str) -> str:
        if len(cell) <= REMEMBERED_SIZE and self._lists() == self._defaults:
            return self._remembered(cell)
        return super().transform_cell(cell)
