"""The colour filter and the edge detector on real frames from the testsrc camera."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from blockhost import params

from pipelined.workers.block import Block
from pipelined.workers.blocks.camera import Camera
from pipelined.workers.blocks.color_filter import ColorFilter
from pipelined.workers.blocks.edge_detector import EdgeDetector
from pipelined.workers.blocks.testsrc import TestScene

WIDTH, HEIGHT = 640, 480


def block(cls: type[Block], **overrides: Any) -> Any:
    instance = cls(cls.__name__.lower(), params(cls, **overrides))
    instance.setup()
    return instance


def run_into(instance: Any, frame: np.ndarray) -> np.ndarray:
    """Run the zero-copy path into a buffer filled with junk, as a reused wire slot is."""
    shape, dtype = instance.output_like([frame])
    out = np.full(shape, 99, dtype)
    assert instance.process_into([frame], out)
    return out


@pytest.fixture(scope="module")
def scene_frame() -> tuple[np.ndarray, tuple[int, int, int]]:
    """Frame 37 from the camera block's testsrc, and where its red square is."""
    camera = block(Camera, size=[WIDTH, HEIGHT], fps=240)
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    for _ in range(38):
        assert camera.process_into([], frame)
    return frame, TestScene(WIDTH, HEIGHT, fps=240).red_square(37)


# -- colour filter ----------------------------------------------------------------------------


def test_colour_filter_keeps_the_red_square_and_blacks_out_the_rest(scene_frame: Any) -> None:
    frame, (x, y, side) = scene_frame
    out = run_into(block(ColorFilter), frame)
    assert out.shape == frame.shape
    square = (slice(y, y + side), slice(x, x + side))
    assert np.array_equal(out[square], frame[square])
    out[square] = 0
    assert not out.any()  # background, green, blue and text all black
    assert np.count_nonzero(frame.max(axis=2) > 0) > frame.shape[0] * frame.shape[1] // 2


def test_colour_filter_hue_range_can_wrap_around_red() -> None:
    patches = np.zeros((10, 40, 3), np.uint8)
    patches[:, 0:10] = (0, 0, 255)  # red, hue 0
    patches[:, 10:20] = (60, 0, 255)  # crimson, hue ~176
    patches[:, 20:30] = (0, 255, 0)  # green
    patches[:, 30:40] = (255, 0, 0)  # blue
    out = run_into(block(ColorFilter, hsv_low=[170, 120, 70], hsv_high=[10, 255, 255]), patches)
    assert np.array_equal(out[:, :20], patches[:, :20])
    assert not out[:, 20:].any()
    plain = run_into(block(ColorFilter, hsv_low=[0, 120, 70], hsv_high=[10, 255, 255]), patches)
    assert np.array_equal(plain[:, :10], patches[:, :10]) and not plain[:, 10:].any()


def test_colour_filter_takes_grey_and_bgra_frames(scene_frame: Any) -> None:
    frame, (_, _, side) = scene_frame
    grey = np.full((20, 30), 200, np.uint8)
    assert not run_into(block(ColorFilter), grey).any()  # grey has no colour
    assert run_into(block(ColorFilter, hsv_low=[0, 0, 100]), grey).all()
    bgra = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    out = run_into(block(ColorFilter), bgra)
    assert np.count_nonzero(out[..., 3]) == side * side


def test_colour_filter_params_are_checked() -> None:
    assert ColorFilter.params["hsv_low"].problem([180, 0, 0]) is not None  # hue is 0-179
    assert ColorFilter.params["hsv_low"].problem([0, 0]) is not None
    assert ColorFilter.params["hsv_high"].problem([10, 255, 255]) is None
    problems = ColorFilter.validate({"hsv_low": [0, 200, 0], "hsv_high": [10, 100, 255]})
    assert len(problems) == 1 and "saturation" in problems[0]
    assert ColorFilter.validate({"hsv_low": [170, 0, 0], "hsv_high": [10, 255, 255]}) == []


# -- edge detector ----------------------------------------------------------------------------


def side_coverage(edges: np.ndarray, x: int, y: int, side: int) -> list[float]:
    """For each side of the square, the share of its length with an edge within 2 px."""

    def near(rows: slice, cols: slice, axis: int) -> float:
        return float(edges[rows, cols].any(axis=axis).mean())

    along = slice(y + 2, y + side - 2), slice(x + 2, x + side - 2)
    return [
        near(slice(y - 2, y + 3), along[1], 0),  # top
        near(slice(y + side - 3, y + side + 2), along[1], 0),  # bottom
        near(along[0], slice(x - 2, x + 3), 1),  # left
        near(along[0], slice(x + side - 3, x + side + 2), 1),  # right
    ]


@pytest.mark.parametrize("blur", [0, 3, 5])
def test_edge_detector_finds_the_red_squares_outline(scene_frame: Any, blur: int) -> None:
    frame, (x, y, side) = scene_frame
    edges = run_into(block(EdgeDetector, blur=blur), frame)
    assert edges.shape == (HEIGHT, WIDTH) and edges.dtype == np.uint8
    assert set(np.unique(edges)) <= {0, 255}
    assert min(side_coverage(edges, x, y, side)) > 0.9
    assert not edges[y + 5 : y + side - 5, x + 5 : x + side - 5].any()  # flat inside
    assert not edges[y - 12 : y - 6, x : x + side].any()  # flat background above it


def test_edge_detector_works_on_the_colour_filters_output(scene_frame: Any) -> None:
    frame, (x, y, side) = scene_frame
    red_only = run_into(block(ColorFilter), frame)
    edges = run_into(block(EdgeDetector), red_only)
    assert min(side_coverage(edges, x, y, side)) > 0.9
    mask = np.zeros_like(edges, bool)
    mask[y - 4 : y + side + 4, x - 4 : x + side + 4] = True
    assert not edges[~mask].any()  # the only thing left is the square


def test_edge_detector_params_and_output_size() -> None:
    assert EdgeDetector.params["blur"].problem(4) is not None
    assert EdgeDetector.params["blur"].problem(0) is None
    assert EdgeDetector.params["blur"].problem(7) is None
    assert EdgeDetector.validate({"low": 200, "high": 100}) != []
    assert EdgeDetector.validate({"low": 50, "high": 150}) == []
    # One byte a pixel always fits in the largest input (grey input: equal; BGR: a third).
    assert EdgeDetector.max_output_bytes({}, [WIDTH * HEIGHT * 3]) >= WIDTH * HEIGHT
    grey = np.zeros((HEIGHT, WIDTH), np.uint8)
    assert block(EdgeDetector).output_like([grey]) == ((HEIGHT, WIDTH), np.dtype(np.uint8))
