"""How a block takes the frames of its first input: a view while it keeps up, a copy when not.

The first input is read in place (zero-copy) and whatever the block makes of it leaves
only if the writer did not reuse the slot meanwhile. A wire has four slots, so a block
that works longer than four of its input's frame periods (a heavy model at 3 fps on a
30 fps camera, or any block on a slow board beside a fast source) would have every
result thrown away and never get a frame out. Such a block gets its own copy of each
frame instead (a memcpy, small beside a block that slow), which nothing can overwrite.
While it copies, each frame still says whether a view would have survived the block's
work; after ``VIEWS_AGAIN`` such frames in a row it goes back to views. The choice is
made per frame from what was seen, with no clock, so one unlucky frame costs one frame.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ipc.wire import Frame

VIEWS_AGAIN = 32
"""Frames in a row whose slot outlived the block's work before views are tried again."""


class FirstInput:
    """The choice between a view and a copy of the first input, made from what each
    frame's slot went through while the block worked on it."""

    def __init__(
        self, views_again: int = VIEWS_AGAIN, on_first_copy: Callable[[], None] | None = None
    ) -> None:
        self.views_again = views_again
        self.on_first_copy = on_first_copy  # called when copies start for the first time
        self.copy = False
        self.copied = 0  # frames taken as copies: none yet when copies first start (logged)
        self._kept = 0

    def taken(self) -> None:
        """A frame was taken the way ``copy`` says."""
        self.copied += self.copy

    def done_with(self, frame: Frame) -> bool:
        """Whether what was made of the frame may leave: a copy always, a view only if
        its slot was not reused meanwhile. What the slot went through decides the next."""
        reused = frame.slot_reused()  # one look at the slot serves both questions
        was_copying = self.copy
        self.worked_on(reused)
        if self.copy and not was_copying and not self.copied and self.on_first_copy:
            self.on_first_copy()
        return frame.copied or not reused

    def worked_on(self, slot_reused: bool) -> None:
        """The block is done with a frame; its slot was reused meanwhile, or not."""
        if slot_reused:
            self.copy, self._kept = True, 0
        elif self.copy:
            self._kept += 1
            if self._kept >= self.views_again:
                self.copy, self._kept = False, 0
