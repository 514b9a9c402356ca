"""Shared fixtures: small synthetic videos and random-weight SAM 2 models at small image sizes."""

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", message=".*RANDOM weights.*")


def make_video(num_frames=18, height=120, width=160, seed=0):
    """Textured background with two moving shapes; returns frames and per-object masks."""
    rng = np.random.default_rng(seed)
    base = (rng.random((height, width, 3)) * 80 + 40).astype(np.uint8)
    frames, masks1, masks2 = [], [], []
    yy, xx = np.mgrid[:height, :width]
    for t in range(num_frames):
        img = base.copy()
        cx, cy = 40 + 3 * t, 60
        m1 = (xx - cx) ** 2 + (yy - cy) ** 2 < 18 ** 2
        img[m1] = (220, 40, 40)
        m2 = (np.abs(xx - (120 - 2 * t)) < 14) & (np.abs(yy - (35 + t)) < 10)
        img[m2] = (40, 200, 60)
        frames.append(img)
        masks1.append(m1)
        masks2.append(m2 & ~m1)
    return frames, masks1, masks2


@pytest.fixture(scope="session")
def video():
    return make_video()
