"""The reference cycle model against values worked out by hand from spec section 4."""

import numpy as np
import pytest

from elkopt.chip import Chip
from elkopt.plans import cycles as cyc


@pytest.mark.parametrize(
    "b, m, k, n, expected",
    [
        # m=32 >= n=8, kept: 24*6*4*1 + 514*4*1 + 113*1 + 173
        (1, 32, 64, 8, 576 + 2056 + 113 + 173),
        # a matrix-vector product: m=1, n=2048 swaps to m=2048, n=1
        (1, 1, 128, 2048, 24 * 342 * 8 + 514 * 8 + 113 + 173),
        # both short: after the swap m=8 <= 16, so it swaps back to m=4, n=8
        (1, 8, 16, 4, 24 + 514 + 113 + 173),
        # batch multiplies
        (3, 8, 16, 4, 3 * (24 + 514 + 113 + 173)),
    ],
)
def test_matmul_cycles(b, m, k, n, expected):
    assert cyc.matmul_cycles(np.array([b]), np.array([m]), np.array([k]), np.array([n]))[0] == expected


def test_elementwise_cycles():
    assert cyc.binary_cycles(np.array([100]))[0] == 365  # 0.75*100 + 290 beats 8517
    assert cyc.binary_cycles(np.array([16432]))[0] == 8517  # capped at 16434*0.5 + 300
    assert cyc.binary_cycles(np.array([20000]))[0] == 10300  # 0.5*20000 + 300
    assert cyc.unary_cycles(np.array([100]))[0] == 250


def test_reduce_cycles_round_the_output_up():
    assert list(cyc.aligned_output(np.array([1, 2, 3, 5, 9, 13, 17, 25, 49]))) == [1, 2, 4, 8, 12, 16, 24, 48, 96]
    assert cyc.reduce_cycles(np.array([3]), np.array([10]))[0] == 235  # a=4, 1.5*40 + 175
    assert cyc.reduce_cycles(np.array([100]), np.array([10]))[0] == 535  # a=144, 0.25*1440 + 175


def test_shift_cycles_reference_rate():
    chip = Chip(name="ipu")
    # 0.56 cycles per 2-byte element at 5.5 GB/s per core
    assert cyc.shift_cycles(np.array([1000]), 2, chip.shift_cycles_per_byte)[0] == pytest.approx(560)
    slower = Chip(name="half", core_link_bytes_per_s=chip.core_link_bytes_per_s / 2)
    assert cyc.shift_cycles(np.array([1000]), 2, slower.shift_cycles_per_byte)[0] == pytest.approx(1120)


def test_output_reduction():
    per_byte = Chip(name="ipu").shift_cycles_per_byte
    piece = np.array([1000.0, 1000.0, 1000.0])
    r = np.array([1, 2, 4])
    got = cyc.output_reduction_cycles(piece, r, 2, per_byte)
    assert got[0] == 0
    # r=2: 2 syncs + shift half the output + element-wise add of 500
    assert got[1] == pytest.approx(2 * 118 + 500 * 0.56 + (0.75 * 500 + 290))
    # r=4: 4 syncs + shift the output + reduce 250 outputs (aligned 288) over 4
    assert got[2] == pytest.approx(4 * 118 + 1000 * 0.56 + (0.25 * 288 * 4 + 175))
