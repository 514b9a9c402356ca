"""The node's fast output paths give the same pixels as the straightforward ones they replaced:
label image and union mask read from the packed bits, mask geometry from row/column counts, the
table-based overlay. The straightforward versions are kept here, verbatim, as the reference
(the overlay's boundary rule, ``_boundary``, did not change and is shared)."""

import array

import numpy as np
import pytest

from fastsam2_ros.core.geometry import EMPTY, MaskGeometry, mask_geometry
from fastsam2_ros.core.stats import BitMasks, FrameResult, FrameStats
from fastsam2_ros.ros.overlay import _boundary, color_of, draw_overlay, token_grid_to_pixels


# ------------------------------------------------------------------ the reference implementations
def reference_label_image(masks, shape):
    out = np.zeros(shape, dtype=np.uint16)
    for obj_id in sorted(masks):
        out[masks[obj_id]] = obj_id
    return out


def reference_geometry(mask):
    m = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return EMPTY
    x0, x1 = int(xs.min()), int(xs.max())
    y0, y1 = int(ys.min()), int(ys.max())
    return MaskGeometry(area=int(xs.size), bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                        centroid=(float(xs.mean()), float(ys.mean())))


def reference_overlay(rgb, masks, alpha=0.5, kept_tokens=None):
    out = rgb.astype(np.float32, copy=True)
    h, w = rgb.shape[:2]
    if kept_tokens:
        kept = np.zeros((h, w), dtype=bool)
        for grid in kept_tokens.values():
            grid = np.asarray(grid, dtype=bool)
            if grid.ndim == 2 and grid.size:
                kept |= token_grid_to_pixels(grid, (h, w))
        out[~kept] *= 0.45
    a = float(np.clip(alpha, 0.0, 1.0))
    for obj_id in sorted(masks):
        m = np.asarray(masks[obj_id], dtype=bool)
        if m.shape != (h, w) or not m.any():
            continue
        c = color_of(obj_id).astype(np.float32)
        out[m] = out[m] * (1.0 - a) + c * a
        out[_boundary(m)] = c
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ scenes
def blobs(rng, n, shape, empty=()):
    """n overlapping random blobs (ellipses + speckle), some touching the frame's edges."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        if i in empty:
            out.append(np.zeros(shape, bool))
            continue
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        rx, ry = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.5) * h
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        m ^= rng.random(shape) < 0.02  # holes and stray pixels
        out.append(m)
    return out


def bitmask_result(ids, masks):
    bm = BitMasks.pack(dict(zip(ids, masks)))
    return FrameResult(frame_index=0, masks=bm, scores={i: 1.0 for i in ids}, stats=FrameStats())


def message_buffer(shape, dtype):
    """A numpy view on an array.array, as the node fills sensor_msgs/Image.data."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = array.array("B", [0]) * n
    return buf, np.frombuffer(buf, dtype=dtype).reshape(shape)


CASES = [  # (object ids in the tracker's order, shape, empty objects)
    ([1], (37, 53), ()),
    ([3, 1, 2], (48, 64), ()),
    ([9, 4, 17, 2, 65535, 8, 1, 30], (40, 56), (5,)),  # exactly one plane
    ([5, 1, 12, 7, 3, 40, 2, 9, 11, 6, 300, 4], (33, 71), (0,)),  # two planes
    (list(range(20, 0, -1)), (29, 31), (3, 19)),  # three planes, descending ids
]


def test_pack_lays_objects_out_as_the_tracker_does():
    """Object i is bit i % 8 of plane i // 8 (core/stats.py; the device step packs so)."""
    masks = {obj_id: np.zeros((2, 3), bool) for obj_id in (40, 3, 7, 1, 2, 9, 5, 6, 8)}
    masks[40][0, 0] = masks[8][1, 2] = masks[9][0, 1] = True
    bits = BitMasks.pack(masks).bits
    assert bits.shape == (2, 2, 3) and bits.dtype == np.uint8
    assert bits[0, 0, 0] == 1 and bits[1, 1, 2] == 1 and bits[0, 0, 1] == 1 << 5
    assert bits.sum() == 1 + 1 + 32


@pytest.mark.parametrize("ids,shape,empty", CASES)
def test_label_image_from_bits_equals_painting_masks(ids, shape, empty):
    rng = np.random.default_rng(len(ids))
    masks = blobs(rng, len(ids), shape, empty)
    res = bitmask_result(ids, masks)
    expected = reference_label_image(dict(zip(ids, masks)), shape)
    np.testing.assert_array_equal(res.label_image(shape), expected)
    for i, m in zip(ids, masks):  # packing and lazy decoding give the masks back
        np.testing.assert_array_equal(res.masks[i], m)
    buf, view = message_buffer(shape, np.uint16)
    assert res.label_image(shape, out=view) is view
    np.testing.assert_array_equal(np.frombuffer(buf, np.uint16).reshape(shape), expected)


@pytest.mark.parametrize("ids,shape,empty", CASES)
def test_union_mask_from_bits_equals_the_masks_union(ids, shape, empty):
    rng = np.random.default_rng(7 + len(ids))
    masks = blobs(rng, len(ids), shape, empty)
    res = bitmask_result(ids, masks)
    expected = np.where(np.any(masks, axis=0), 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(res.union_mask(shape), expected)
    buf, view = message_buffer(shape, np.uint8)
    assert res.union_mask(shape, out=view) is view
    np.testing.assert_array_equal(np.frombuffer(buf, np.uint8).reshape(shape), expected)


def test_dict_masks_still_take_the_painting_path_and_fill_out():
    rng = np.random.default_rng(3)
    masks = dict(zip([2, 1], blobs(rng, 2, (20, 30))))
    res = FrameResult(frame_index=0, masks=masks, scores={}, stats=FrameStats())
    _, view = message_buffer((20, 30), np.uint16)
    view[...] = 99  # stale content must not survive
    np.testing.assert_array_equal(res.label_image(out=view), reference_label_image(masks, (20, 30)))
    view[...] = 99
    np.testing.assert_array_equal(res.union_mask(out=view.view(np.uint8)[:, :30]),
                                  np.where(np.any(list(masks.values()), axis=0), 255, 0))


@pytest.mark.parametrize("seed", range(6))
def test_mask_geometry_equals_listing_the_pixels(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 90)), int(rng.integers(1, 120)))
    for m in blobs(rng, 4, shape) + [np.zeros(shape, bool), np.ones(shape, bool)]:
        assert mask_geometry(m) == reference_geometry(m) or (
            m.sum() == 0 and mask_geometry(m).empty and reference_geometry(m).empty)
    one = np.zeros(shape, bool)
    one[shape[0] - 1, shape[1] - 1] = True
    assert mask_geometry(one) == reference_geometry(one)


def test_mask_geometry_of_a_full_hd_mask_is_exact():
    rng = np.random.default_rng(11)
    m = blobs(rng, 1, (1080, 1920))[0]
    assert mask_geometry(m) == reference_geometry(m)  # centroid equal as floats, not approx


def _kept_grids(rng, ids, g=8):
    return {i: rng.random((g, g)) < 0.4 for i in ids}


@pytest.mark.parametrize("ids,shape,empty", CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.35, 0.5, 1.0])
@pytest.mark.parametrize("tokens", [False, True])
def test_overlay_equals_the_float_painting(ids, shape, empty, alpha, tokens):
    rng = np.random.default_rng(len(ids) * 10 + int(alpha * 100))
    rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    masks = dict(zip(ids, blobs(rng, len(ids), shape, empty)))
    kept = _kept_grids(rng, ids) if tokens else None
    expected = reference_overlay(rgb, masks, alpha, kept)
    np.testing.assert_array_equal(draw_overlay(rgb, masks, alpha, kept), expected)
    # from packed bits (what the node gets), into a message buffer
    res = bitmask_result(ids, [masks[i] for i in ids])
    buf, view = message_buffer(shape + (3,), np.uint8)
    assert draw_overlay(rgb, res.masks, alpha, kept, out=view) is view
    np.testing.assert_array_equal(np.frombuffer(buf, np.uint8).reshape(shape + (3,)), expected)


def test_overlay_edge_cases_equal_the_float_painting():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    px = np.zeros((24, 32), bool)
    px[0, 0] = True  # one pixel in a corner
    line = np.zeros((24, 32), bool)
    line[:, 31] = True  # a column on the right edge
    full = np.ones((24, 32), bool)  # the whole frame, under the others
    wrong = np.ones((10, 10), bool)  # wrong size: skipped
    masks = {7: px, 2: line, 1: full, 4: wrong, 9: np.zeros((24, 32), bool)}
    for alpha in (0.2, 0.5):
        np.testing.assert_array_equal(draw_overlay(rgb, masks, alpha),
                                      reference_overlay(rgb, masks, alpha))
    np.testing.assert_array_equal(draw_overlay(rgb, {}), rgb)
    kept = {1: np.zeros((4, 4), bool), 2: np.zeros((0, 0), bool)}
    np.testing.assert_array_equal(draw_overlay(rgb, {}, 0.5, kept), reference_overlay(rgb, {}, 0.5, kept))
