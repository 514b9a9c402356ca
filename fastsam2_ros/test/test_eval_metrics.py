"""DAVIS J / F / statistics on hand-made masks whose values are derived by hand in the comments."""

import math

import numpy as np
import pytest

from fastsam2_ros.eval.metrics import (boundary_f, boundary_prf, boundary_radius, db_statistics,
                                       decay_bin_edges, disk, region_j, seg2bmap)


def z(h, w):
    return np.zeros((h, w), bool)


# ------------------------------------------------------------------------------------------- J
def test_j_both_empty_is_one_and_empty_vs_nonempty_is_zero():
    e = z(10, 10)
    m = e.copy()
    m[2:4, 2:4] = True
    assert region_j(e, e) == 1.0
    assert region_j(e, m) == 0.0  # union 4, intersection 0
    assert region_j(m, e) == 0.0


def test_j_one_pixel_shift_of_a_2x2_square_is_one_third():
    g = z(6, 6)
    g[1:3, 1:3] = True  # 4 px
    p = np.roll(g, 1, axis=1)  # columns 2..3: overlap 2 px, union 6 px
    assert region_j(g, p) == pytest.approx(2 / 6)


def test_j_ignores_void_pixels():
    g = z(6, 6)
    g[1:3, 1:3] = True
    p = z(6, 6)
    p[1:3, 1:4] = True  # 2 extra px in column 3
    void = z(6, 6)
    void[:, 3] = True
    assert region_j(g, p) == pytest.approx(4 / 6)
    assert region_j(g, p, void) == 1.0
    # everything void -> empty union -> 1
    assert region_j(g, p, np.ones((6, 6), bool)) == 1.0


def test_j_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different shapes"):
        region_j(z(4, 4), z(4, 5))


# ------------------------------------------------------------------------------------ seg2bmap
def test_seg2bmap_single_pixel_marks_the_2x2_block_towards_the_origin():
    s = z(5, 5)
    s[2, 2] = True
    b = seg2bmap(s)
    # (2,2) differs from its right neighbour; (1,2) from its lower one; (2,1) from its right one;
    # (1,1) from its lower-right one. Nothing else differs from right/down/down-right.
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_seg2bmap_all_foreground_and_all_background_have_no_boundary():
    assert not seg2bmap(np.ones((4, 4), bool)).any()
    assert not seg2bmap(z(4, 4)).any()


def test_seg2bmap_right_border_is_not_a_boundary_but_left_border_is():
    right = z(4, 4)
    right[:, 3] = True  # touches the right border
    b = seg2bmap(right)
    # column 2 (background) differs from its right neighbour -> boundary; column 3 is compared
    # only downwards (all ones) and (3,3) is forced to 0.
    assert b[:, 2].all() and not b[:, 3].any() and b.sum() == 4
    left = z(4, 4)
    left[:, 0] = True
    b = seg2bmap(left)
    assert b[:, 0].all() and b.sum() == 4  # the object's own pixels differ from their right


def test_seg2bmap_bottom_row_only_compares_to_the_right():
    s = z(4, 4)
    s[3, :] = True  # bottom row: pixels above it differ downwards, the row itself is uniform
    b = seg2bmap(s)
    assert b[2, :].all() and not b[3, :].any() and b.sum() == 4


# ---------------------------------------------------------------------------------- tolerance
def test_boundary_radius_is_ceil_of_0008_times_diagonal():
    assert boundary_radius((480, 854)) == 8  # DAVIS 480p: 0.008 * 979.7 = 7.84
    assert boundary_radius((100, 100)) == 2  # 1.13
    assert boundary_radius((30, 40)) == 1  # 0.4
    assert boundary_radius((100, 100), bound_th=5) == 5  # >= 1: pixels


def test_disk_has_the_integer_points_of_the_closed_disk():
    assert disk(0).tolist() == [[1]]
    assert disk(1).sum() == 5
    d2 = disk(2)  # (0,0), 4 at distance 1, 4 at distance 2 on the axes, 4 diagonal (1,1)
    assert d2.shape == (5, 5) and d2.sum() == 13
    assert d2[0, 0] == 0 and d2[1, 1] == 1 and d2[0, 1] == 0


# ------------------------------------------------------------------------------------------- F
def test_f_empty_cases():
    e = z(20, 20)
    m = e.copy()
    m[5:10, 5:10] = True
    assert boundary_f(e, e) == 1.0  # no boundary on either side: P = R = 1
    assert boundary_f(e, m) == 0.0  # predicted boundary, none in GT: P = 0, R = 1
    assert boundary_f(m, e) == 0.0  # no predicted boundary, GT has one: P = 1, R = 0
    assert boundary_prf(m, e) == (1.0, 0.0, 0.0)
    assert boundary_prf(e, m) == (0.0, 1.0, 0.0)


def test_f_full_frame_masks_have_no_boundary():
    full = np.ones((20, 20), bool)
    part = z(20, 20)
    part[:, :10] = True
    assert boundary_f(full, full) == 1.0
    assert boundary_f(part, full) == 0.0  # prediction covers the image: no predicted boundary


@pytest.mark.parametrize("shift, expected", [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0)])
def test_f_vertical_edge_shift_against_tolerance_2(shift, expected):
    # 100x100: tolerance ceil(0.008 * 141.4) = 2 px. GT = columns 0..49, its boundary is column
    # 49 (100 px); the prediction's boundary is column 49 + shift. Matches iff shift <= 2.
    g = z(100, 100)
    g[:, :50] = True
    p = z(100, 100)
    p[:, :50 + shift] = True
    assert boundary_f(g, p) == expected


def test_f_one_pixel_shift_of_a_square_is_perfect_while_j_is_not():
    g = z(100, 100)
    g[40:60, 40:60] = True
    p = np.roll(g, 1, axis=1)
    assert boundary_f(g, p) == 1.0  # 1 px <= 2 px tolerance
    assert region_j(g, p) == pytest.approx(380 / 420)  # 19x20 overlap, 21x20 union


def test_f_thin_line_shifted_by_one_row():
    # 200x200 (tolerance 3): a 1-px line moved down one row shares no pixel (J = 0) but every
    # boundary pixel of one lies within 1 px of the other's boundary (F = 1).
    g = z(200, 200)
    g[50, 50:150] = True
    p = z(200, 200)
    p[51, 50:150] = True
    assert region_j(g, p) == 0.0
    assert boundary_f(g, p) == 1.0
    # moved by 10 rows: nothing within 3 px -> P = R = 0 -> F = 0
    assert boundary_f(g, np.roll(g, 10, axis=0)) == 0.0


def test_f_partial_match_derived_by_hand():
    # 100x100, tolerance 2. GT = columns 0..49 (boundary: column 49, rows 0..99 = 100 px).
    # Prediction = top-left 50x50 block: boundary = column 49 rows 0..49 (50 px) + row 49
    # columns 0..48 (49 px) = 99 px.
    # Precision: the 50 column pixels + row-49 pixels at columns 47, 48 (within 2 px of (49,49))
    # = 52 / 99. Recall: GT rows 0..49 + rows 50, 51 (within 2 px of (49,49)) = 52 / 100.
    # F = 2PR / (P + R) = 104 / 199.
    g = z(100, 100)
    g[:, :50] = True
    p = z(100, 100)
    p[:50, :50] = True
    P, R, F = boundary_prf(g, p)
    assert P == pytest.approx(52 / 99)
    assert R == pytest.approx(52 / 100)
    assert F == pytest.approx(104 / 199)
    assert region_j(g, p) == pytest.approx(0.5)


def test_f_void_pixels_are_removed_before_boundaries():
    # The prediction's extra column lies in void: removed, boundaries coincide -> F = 1.
    g = z(30, 40)  # tolerance 1
    g[5:15, 5:15] = True
    p = z(30, 40)
    p[5:15, 5:25] = True  # 10 px too wide (beyond tolerance)
    void = z(30, 40)
    void[:, 15:] = True
    assert boundary_f(g, p) < 0.8
    assert boundary_f(g, p, void) == 1.0


# ---------------------------------------------------------------------------------- statistics
def test_statistics_constant_sequence():
    assert db_statistics([1.0, 1.0, 1.0, 1.0]) == (1.0, 1.0, 0.0)


def test_statistics_decay_bins_and_strict_recall_derived_by_hand():
    # n = 8: linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8 -> rounded (halves up) 1, 3, 5, 6, 8 -> -1:
    # edges 0, 2, 4, 5, 7; first bin v[0:3], last bin v[5:8].
    assert decay_bin_edges(8).tolist() == [0, 2, 4, 5, 7]
    v = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    m, r, d = db_statistics(v)
    assert m == pytest.approx(5.2 / 8)
    assert r == pytest.approx(5 / 8)  # 0.5 itself is not > 0.5
    assert d == pytest.approx(0.9 - 0.4)


def test_statistics_two_frames_and_one_frame():
    # n = 2: edges round(1, 1.25, 1.5, 1.75, 2) - 1 = 0, 0, 1, 1, 1 -> first bin [v0], last [v1]
    assert db_statistics([0.0, 1.0]) == (0.5, 0.5, -1.0)
    assert db_statistics([0.7]) == (pytest.approx(0.7), 1.0, 0.0)


def test_statistics_nan_frames_are_skipped_by_mean_but_count_as_misses_in_recall():
    m, r, d = db_statistics([math.nan, 1.0, 0.0])
    assert m == 0.5 and r == pytest.approx(1 / 3)


def test_statistics_no_frames_is_nan():
    assert all(math.isnan(x) for x in db_statistics([]))
