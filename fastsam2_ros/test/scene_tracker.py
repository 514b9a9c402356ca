"""A test double of ``StreamingTracker`` for node tests (not a test module).

SAM 2 with random weights never predicts an absent object, so the node's occlusion path cannot be
driven by the real model in CI. This double segments each prompted object by its colour in the
frame (the colour under the object's first positive click) and returns, for a frame without that
colour, what the core returns for an absent object: an empty mask, a negative presence logit, the
object still tracked, and ``FrameStats.occluded_frames`` counting consecutive invisible frames
(the core's contract, core/stats.py). It uses the core's own prompt validation and result types,
and records which thread called it, so tests can check that only the frame worker does.
"""

import threading

import numpy as np

from fastsam2_ros.core.errors import InputError
from fastsam2_ros.core.prompts import validate_image, validate_object_id, validate_points
from fastsam2_ros.core.stats import BitMasks, FrameResult, FrameStats

PRESENT, ABSENT = 4.0, -4.0  # presence logits of a visible / an absent object


class SceneTracker:
    def __init__(self, cfg, packed=False):
        self.cfg = cfg
        self.packed = packed  # masks as packed bits (BitMasks), as the CUDA fast path returns them
        self.device = "cpu"
        self.keep_ratio = float(cfg.keep_ratio)
        self.frame_index = -1
        self.colours = {}  # obj_id -> RGB colour it is segmented by
        self.occluded = {}
        self.image = None
        self.callers = set()  # thread idents of every call

    def _called(self):
        self.callers.add(threading.get_ident())

    @property
    def object_ids(self):
        return list(self.colours)

    def track(self, rgb):
        self._called()
        self.image = validate_image(rgb)
        self.frame_index += 1
        result = self._result([])
        for obj_id, visible in result.visible.items():
            self.occluded[obj_id] = 0 if visible else self.occluded.get(obj_id, 0) + 1
            result.stats.occluded_frames[obj_id] = self.occluded[obj_id]
        return result

    def add_prompt(self, obj_id, points=None, labels=None, box=None, mask=None, text=None,
                   image=None, restart=False):
        self._called()
        obj_id = validate_object_id(obj_id)
        if image is not None:
            self.track(image)
        if self.image is None:
            raise InputError("no frame has been tracked yet: pass image= with the first prompt")
        if points is None:
            raise InputError("this test double understands clicks only")
        pts, lab = validate_points(points, labels, self.image.shape[:2])
        if restart:
            self.colours.pop(obj_id, None)
        if obj_id not in self.colours:
            x, y = pts[int(np.argmax(lab))]
            self.colours[obj_id] = tuple(int(c) for c in self.image[int(y), int(x)])
            self.occluded[obj_id] = 0
        return self._result([])

    def remove_object(self, obj_id):
        self._called()
        if obj_id not in self.colours:
            raise InputError(f"unknown object id {obj_id}; tracked: {self.object_ids}")
        del self.colours[obj_id]
        self.occluded.pop(obj_id, None)

    def reset(self):
        self._called()
        self.colours.clear()
        self.occluded.clear()
        self.image = None

    def current_result(self, image_shape=None):
        """As the core's: the current frame's objects without tracking it again; after a reset
        (no frame) none, in ``image_shape``."""
        self._called()
        return self._result([], shape=image_shape if self.image is None else None)

    def set_keep_ratio(self, keep_ratio):
        self._called()
        self.cfg.replace(keep_ratio=keep_ratio)  # validates like the real tracker (raises InputError)
        self.keep_ratio = float(keep_ratio)

    def release(self):
        self._called()

    def _result(self, auto, shape=None):
        if shape is None:
            shape = self.image.shape[:2]
        masks = {i: np.all(self.image == np.array(c, np.uint8), axis=2) for i, c in self.colours.items()}
        scores = {i: PRESENT if m.any() else ABSENT for i, m in masks.items()}
        stats = FrameStats(frame_index=self.frame_index, tokens_total=64,
                           tokens_kept={i: 32 for i in masks}, keep_ratio=self.keep_ratio,
                           object_ids=list(masks), auto_prompted=auto,
                           occluded_frames=dict(self.occluded), router_mode="training_free")
        if self.packed and masks:
            masks = BitMasks.pack(masks)
        return FrameResult(frame_index=self.frame_index, masks=masks, scores=scores, stats=stats,
                           image_shape=tuple(shape)[:2])
