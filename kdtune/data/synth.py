"""A synthetic person-keypoints data set in the genuine COCO 2017 layout.

``write_synthetic(out)`` draws cartoon people from an explicit 2-D kinematic skeleton onto
cluttered backgrounds and writes::

    out/annotations/person_keypoints_{train,val,test}2017.json
    out/{train,val,test}2017/<image id>.jpg

Each image holds 0-3 people of varied size, pose, clothing and skin colour; people overlap,
objects occlude them and the image border cuts some. Keypoints follow COCO: a joint outside
the image is unlabelled ``(0, 0, 0)``, a joint hidden by another person or an object is
``v = 1``, a visible one ``v = 2``. Every image comes from its own random stream
``(seed, split, index)``, so the same seed gives byte-identical files, and the first ``k``
images of a split do not depend on how many are asked for.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kdtune.errors import KdtuneError
from kdtune.skeleton import COCO17

# The embedded default's split sizes. 4096 training images: on 512, the teacher overfits (its
# validation loss stalls while its training loss falls) and a tiny student trained alone for as
# many steps on 2048 images beats one trained on 512 (README, "Measured"). 512 validation
# images: on 128, one configuration's AP varied by 0.009 (sd) over training seeds, too much to
# tell a 0.02 difference; on 512, by 0.005 (benchmarks/val_size.py).
DEFAULT_SIZES: dict[str, int] = {"train": 4096, "val": 512, "test": 512}
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
JPEG_QUALITY = 90
_SHIFT = 4  # cv2 fixed-point bits: drawing coordinates are sub-pixel
_ONE = 1 << _SHIFT
_OCCLUDER = 255  # owner-map value of an occluding object (people are 1..n, background 0)

_LONG_WORDS = {"sho": "shoulder", "elb": "elbow", "wri": "wrist", "ank": "ankle"}
_COCO_SKELETON_NAMES: tuple[tuple[str, str], ...] = (
    ("l_ank", "l_knee"), ("l_knee", "l_hip"), ("r_ank", "r_knee"), ("r_knee", "r_hip"),
    ("l_hip", "r_hip"), ("l_sho", "l_hip"), ("r_sho", "r_hip"), ("l_sho", "r_sho"),
    ("l_sho", "l_elb"), ("r_sho", "r_elb"), ("l_elb", "l_wri"), ("r_elb", "r_wri"),
    ("l_eye", "r_eye"), ("nose", "l_eye"), ("nose", "r_eye"), ("l_eye", "l_ear"),
    ("r_eye", "r_ear"), ("l_ear", "l_sho"), ("r_ear", "r_sho"),
)  # fmt: skip
_J = {name: i for i, name in enumerate(COCO17)}

_SKIN_TONES = np.array(
    [
        (255, 224, 196),
        (241, 194, 160),
        (224, 172, 130),
        (198, 134, 90),
        (160, 102, 62),
        (120, 74, 44),
        (88, 54, 34),
    ],
    dtype=np.float64,
)  # fmt: skip  (RGB)


def coco_keypoint_names() -> list[str]:
    """The official COCO keypoint names (``left_shoulder`` ...), in COCO-17 order."""
    names = []
    for short in COCO17:
        side, _, part = short.partition("_")
        if part:
            part = _LONG_WORDS.get(part, part)
            names.append(f"{'left' if side == 'l' else 'right'}_{part}")
        else:
            names.append(short)
    return names


def person_category() -> dict[str, Any]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": coco_keypoint_names(),
        "skeleton": [[_J[a] + 1, _J[b] + 1] for a, b in _COCO_SKELETON_NAMES],
    }


# ----------------------------------------------------------------------------- geometry


def _dir(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` radians from straight down, turning towards +x (image right)."""
    return np.array([math.sin(angle), math.cos(angle)])


@dataclass
class _Body:
    """One person: joints in image pixels (COCO-17 order) and how to draw them."""

    joints: np.ndarray  # [17, 2] float
    drawn: np.ndarray  # [17] bool: joint exists on the drawing (hidden face parts do not)
    height: float  # nominal standing height in pixels
    head: np.ndarray  # head centre
    head_r: float
    facing: int  # +1 towards the camera, -1 away
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    hair: tuple[int, int, int]
    short_sleeves: bool
    shorts: bool


def _pose(rng: np.random.Generator, height: float) -> _Body:
    """A random articulated person ``height`` pixels tall with the neck at the origin."""
    seg = rng.uniform(0.9, 1.1, size=8) * height  # per-segment body proportions
    theta = rng.normal(0.0, 0.12) if rng.random() > 0.07 else rng.uniform(-0.7, 0.7)
    facing = 1 if rng.random() < 0.88 else -1
    joints = np.zeros((17, 2))
    drawn = np.ones(17, dtype=bool)
    _limbs(rng, joints, seg, theta, facing)
    head_r = 0.065 * seg[0]
    head = _face(rng, joints, drawn, head_r, 0.045 * seg[0], theta, facing)
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.05)
    return _Body(
        joints=joints,
        drawn=drawn,
        height=height,
        head=head,
        head_r=head_r,
        facing=facing,
        skin=_rgb(skin),
        shirt=_rgb(_random_colour(rng, sat=(0.35, 1.0), val=(0.35, 1.0))),
        pants=_rgb(_random_colour(rng, sat=(0.1, 0.8), val=(0.15, 0.7))),
        hair=_rgb(_random_colour(rng, sat=(0.2, 0.7), val=(0.05, 0.45))),
        short_sleeves=bool(rng.random() < 0.4),
        shorts=bool(rng.random() < 0.3),
    )


def _limbs(
    rng: np.random.Generator, j: np.ndarray, seg: np.ndarray, theta: float, facing: int
) -> None:
    """Shoulders, hips, arms and legs from a torso leaning ``theta`` and random joint angles.

    Angles are measured from the torso's downward axis, positive away from the body; the
    person's left is on the image right when ``facing`` the camera.
    """
    width = rng.uniform(0.55, 1.0)  # < 1: turned sideways
    sho_w, hip_w = 0.24 * seg[2] * width, 0.17 * seg[2] * width
    upper_arm, fore_arm = 0.165 * seg[3], 0.15 * seg[4]
    thigh, shin = 0.235 * seg[5], 0.225 * seg[6]
    right = _dir(theta + math.pi / 2)
    hip_c = _dir(theta) * 0.30 * seg[1]
    sitting = rng.random() < 0.1
    for side, sgn in (("l", facing), ("r", -facing)):
        sho = right * sgn * sho_w / 2
        hip = hip_c + right * sgn * hip_w / 2
        a1 = rng.triangular(-0.35, 0.25, 2.9)  # shoulder
        a2 = float(np.clip(rng.normal(0.0, 0.9), -2.6, 2.6))  # elbow
        elb = sho + _dir(theta + sgn * a1) * upper_arm
        wri = elb + _dir(theta + sgn * (a1 + a2)) * fore_arm
        b1 = rng.uniform(0.6, 1.6) if sitting else rng.triangular(-0.3, 0.08, 1.1)  # hip
        b2 = float(np.clip(rng.normal(0.0, 0.4), -2.0, 2.0))  # knee
        if sitting:  # thighs out to the side, shins back down
            b2 = -sgn * b1 * rng.uniform(0.7, 1.2)
        knee = hip + _dir(theta + sgn * b1) * thigh
        ank = knee + _dir(theta + sgn * b1 + b2) * shin
        for name, point in (("sho", sho), ("elb", elb), ("wri", wri), ("hip", hip)):
            j[_J[f"{side}_{name}"]] = point
        j[_J[f"{side}_knee"]], j[_J[f"{side}_ank"]] = knee, ank


def _face(
    rng: np.random.Generator,
    j: np.ndarray,
    drawn: np.ndarray,
    head_r: float,
    neck_len: float,
    theta: float,
    facing: int,
) -> np.ndarray:
    """Nose, eyes and ears on a head above the neck, turned by a random yaw; the head centre.

    Seen from behind, the face is not drawn; a face turned far hides the ear on that side.
    """
    phi = theta + rng.normal(0.0, 0.15)
    head = -_dir(phi) * (neck_len + head_r)
    hdown, hright = _dir(phi), _dir(phi + math.pi / 2)
    yaw = rng.uniform(-0.5, 0.5)
    j[_J["nose"]] = head + hright * facing * yaw * head_r + hdown * 0.25 * head_r
    for side, sgn in (("l", facing), ("r", -facing)):
        eye = head + hright * (sgn * 0.38 + facing * yaw * 0.6) * head_r - hdown * 0.12 * head_r
        j[_J[f"{side}_eye"]] = eye
        j[_J[f"{side}_ear"]] = head + hright * (sgn * 0.97 - facing * yaw * 0.3) * head_r
        drawn[_J[f"{side}_ear"]] = not (facing > 0 and sgn * yaw > 0.35)
    if facing < 0:
        drawn[[_J["nose"], _J["l_eye"], _J["r_eye"]]] = False
    return head


def _random_colour(
    rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]
) -> np.ndarray:
    """An RGB colour (0-255 floats) from a random hue and a saturation/value range."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _rgb(colour: Any) -> tuple[int, int, int]:
    """An RGB triple of ints in 0-255 (what cv2 drawing takes)."""
    r, g, b = (min(255, max(0, int(c))) for c in colour)
    return r, g, b


def _dark(colour: tuple[int, int, int], f: float = 0.45) -> tuple[int, int, int]:
    """The same colour, darker (outlines, ears, the nose)."""
    return _rgb(c * f for c in colour)


# ----------------------------------------------------------------------------- drawing


class _Canvas:
    """The image plus an owner map (who is on top where) and the current person's silhouette."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.owner: np.ndarray = np.zeros(image.shape[:2], dtype=np.uint8)
        self.sil: np.ndarray = np.zeros(image.shape[:2], dtype=np.uint8)
        self.pid = 0

    def capsule(self, a: np.ndarray, b: np.ndarray, t: float, colour: tuple[int, int, int]) -> None:
        """A limb: a thick segment with a darker outline."""
        p, q = _fix(a), _fix(b)
        outer, inner = max(2, round(t) + 2), max(1, round(t))
        cv2.line(self.image, p, q, _dark(colour), outer, cv2.LINE_AA, _SHIFT)
        cv2.line(self.image, p, q, colour, inner, cv2.LINE_AA, _SHIFT)
        for m, v in ((self.owner, self.pid), (self.sil, 1)):
            cv2.line(m, p, q, v, outer, cv2.LINE_8, _SHIFT)

    def disc(
        self, c: np.ndarray, r: float, colour: tuple[int, int, int], outline: bool = True
    ) -> None:
        """A filled circle, with a darker rim when ``outline``."""
        rr = max(1, round(r * _ONE))
        if outline:
            cv2.circle(self.image, _fix(c), rr + _ONE, _dark(colour), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.image, _fix(c), rr, colour, -1, cv2.LINE_AA, _SHIFT)
        for m, v in ((self.owner, self.pid), (self.sil, 1)):
            cv2.circle(m, _fix(c), rr + (_ONE if outline else 0), v, -1, cv2.LINE_8, _SHIFT)

    def polygon(self, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        """A filled polygon with a darker outline."""
        poly = [np.round(pts * _ONE).astype(np.int32)]
        cv2.fillPoly(self.image, poly, colour, cv2.LINE_AA, _SHIFT)
        cv2.polylines(self.image, poly, True, _dark(colour), 1, cv2.LINE_AA, _SHIFT)
        for m, v in ((self.owner, self.pid), (self.sil, 1)):
            cv2.fillPoly(m, poly, v, cv2.LINE_8, _SHIFT)


def _fix(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0]) * _ONE), round(float(p[1]) * _ONE)


def _draw_person(cv: _Canvas, body: _Body) -> None:
    """Legs, torso, arms, then the head, each limb in its clothing colour."""
    j, h = body.joints, body.height
    t_arm, t_fore, t_thigh, t_shin = 0.075 * h, 0.062 * h, 0.1 * h, 0.08 * h
    for side in ("l", "r"):
        hip, knee, ank = j[_J[f"{side}_hip"]], j[_J[f"{side}_knee"]], j[_J[f"{side}_ank"]]
        cv.capsule(hip, knee, t_thigh, body.pants)
        cv.capsule(knee, ank, t_shin, body.skin if body.shorts else body.pants)
        cv.disc(ank + (ank - knee) * 0.08, 0.04 * h, (40, 32, 28))  # shoe
    ls, rs, lh, rh = (j[_J[n]] for n in ("l_sho", "r_sho", "l_hip", "r_hip"))
    centre = (ls + rs + lh + rh) / 4
    torso = np.array([ls, rs, rh, lh])
    torso = centre + (torso - centre) * 1.12
    cv.polygon(torso, body.shirt)
    neck = (ls + rs) / 2
    cv.capsule(neck, body.head, 0.06 * h, body.skin)
    for side in ("l", "r"):
        sho, elb, wri = j[_J[f"{side}_sho"]], j[_J[f"{side}_elb"]], j[_J[f"{side}_wri"]]
        cv.capsule(sho, elb, t_arm, body.shirt)
        cv.capsule(elb, wri, t_fore, body.skin if body.short_sleeves else body.shirt)
        cv.disc(wri + (wri - elb) * 0.12, 0.036 * h, body.skin)  # hand
    _draw_head(cv, body)


def _draw_head(cv: _Canvas, body: _Body) -> None:
    """Ears, the head disc, hair, then eyes and nose where the face is towards the camera."""
    j, r = body.joints, body.head_r
    for ear in ("l_ear", "r_ear"):
        if body.drawn[_J[ear]]:
            cv.disc(j[_J[ear]], 0.3 * r, _dark(body.skin, 0.85))
    cv.disc(body.head, r, body.skin)
    up = body.head - (j[_J["l_sho"]] + j[_J["r_sho"]]) / 2
    up = up / max(np.linalg.norm(up), 1e-6)
    if body.facing < 0:
        cv.disc(body.head, r * 0.92, body.hair, outline=False)
    else:
        cv.disc(body.head + up * r * 0.55, r * 0.62, body.hair, outline=False)
        eye_r = max(0.8, 0.13 * r)
        for eye in ("l_eye", "r_eye"):
            cv.disc(j[_J[eye]], eye_r, (20, 20, 30), outline=False)
        cv.disc(j[_J["nose"]], max(0.8, 0.12 * r), _dark(body.skin, 0.7), outline=False)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gradient with random shapes, lines, stripes and limb-coloured distractor blobs."""
    c1, c2 = (_random_colour(rng, (0.0, 0.8), (0.2, 1.0)).astype(np.float32) for _ in range(2))
    a = rng.uniform(0, 2 * math.pi)
    t = np.arange(w, dtype=np.float32)[None, :] * math.cos(a)
    t = t + np.arange(h, dtype=np.float32)[:, None] * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = (c1 + (c2 - c1) * t[..., None]).astype(np.uint8)
    if rng.random() < 0.2:  # stripes
        period, col = int(rng.integers(6, 24)), _rgb(_random_colour(rng, (0, 1), (0, 1)))
        for x in range(int(rng.integers(0, period)), w + h, period):
            cv2.line(img, (x, 0), (x - h, h), col, max(1, period // 3))
    for _ in range(int(rng.integers(3, 12))):
        _random_shape(rng, img, _rgb(_random_colour(rng, (0, 1), (0.1, 1))))
    for _ in range(int(rng.integers(0, 4))):  # limb-like distractors
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        q = p + _dir(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.08, 0.25) * h
        col = _rgb(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] if rng.random() < 0.5
                   else _random_colour(rng, (0.35, 1), (0.35, 1)))  # fmt: skip
        t_px = rng.uniform(0.03, 0.08) * h
        cv2.line(img, _fix(p), _fix(q), _dark(col), round(t_px) + 2, cv2.LINE_AA, _SHIFT)
        cv2.line(img, _fix(p), _fix(q), col, max(1, round(t_px)), cv2.LINE_AA, _SHIFT)
    return img


def _random_shape(rng: np.random.Generator, img: np.ndarray, col: tuple[int, int, int]) -> None:
    """One filled rectangle, circle, ellipse, polygon or thick line somewhere on ``img``."""
    h, w = img.shape[:2]
    kind = int(rng.integers(5))
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    s = int(rng.integers(4, max(6, min(h, w) // 3)))
    if kind == 0:
        cv2.rectangle(img, (cx - s, cy - s // 2), (cx + s, cy + s), col, -1)
    elif kind == 1:
        cv2.circle(img, (cx, cy), s // 2 + 1, col, -1, cv2.LINE_AA)
    elif kind == 2:
        axes = (s, max(1, int(s * rng.uniform(0.2, 0.9))))
        cv2.ellipse(img, (cx, cy), axes, rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
    elif kind == 3:
        pts = np.array([cx, cy]) + rng.integers(-s, s + 1, size=(int(rng.integers(3, 7)), 2))
        cv2.fillPoly(img, [pts.astype(np.int32)], col, cv2.LINE_AA)
    else:
        end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, (cx, cy), end, col, int(rng.integers(1, 5)), cv2.LINE_AA)


def _occlude(rng: np.random.Generator, cv: _Canvas, bodies: list[_Body]) -> None:
    """Draw one object over a random joint of a random person (it hides what it covers)."""
    body = bodies[int(rng.integers(len(bodies)))]
    c = body.joints[int(rng.integers(17))] + rng.normal(0, 0.05 * body.height, size=2)
    hw = rng.uniform(0.08, 0.3) * body.height * np.array([rng.uniform(0.4, 1.6), 1.0])
    ang = rng.uniform(-0.5, 0.5) if rng.random() < 0.5 else 0.0
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * hw @ rot.T + c
    poly = [np.round(corners * _ONE).astype(np.int32)]
    col = _rgb(_random_colour(rng, (0, 0.9), (0.15, 0.95)))
    cv2.fillPoly(cv.image, poly, col, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.5:  # a little texture: a darker inner band
        inner = [np.round((c + (corners - c) * 0.5) * _ONE).astype(np.int32)]
        cv2.fillPoly(cv.image, inner, _dark(col, 0.7), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(cv.owner, poly, _OCCLUDER, cv2.LINE_8, _SHIFT)


# ----------------------------------------------------------------------------- one image


def _place(rng: np.random.Generator, body: _Body, h: int, w: int) -> None:
    """Move the body (drawn around the origin) into the image; some stick out of a border."""
    pts = np.vstack([body.joints, body.head - body.head_r, body.head + body.head_r])
    lo, hi = pts.min(0), pts.max(0)
    size = np.array([w, h], dtype=np.float64)
    cut = rng.random() < 0.15
    slack = (hi - lo) * (0.45 if cut else 0.0)
    low, high = -lo - slack, size - hi + slack
    off = np.where(
        low <= high, rng.uniform(np.minimum(low, high), np.maximum(low, high)), (low + high) / 2
    )
    off = np.clip(off, 1.0, size - 1.0)  # the neck (origin) stays inside the image
    body.joints = body.joints + off
    body.head = body.head + off


def _annotate(
    cv: _Canvas, body: _Body, image_id: int, ann_id: int, silhouette: np.ndarray
) -> dict[str, Any]:
    """The COCO annotation of one drawn person: keypoints with visibility, bbox, area, polygon."""
    h, w = int(cv.owner.shape[0]), int(cv.owner.shape[1])
    kps: list[float] = []
    for k in range(17):
        x, y = body.joints[k]
        inside = 0 <= x < w and 0 <= y < h and body.drawn[k]
        if not inside:
            kps += [0.0, 0.0, 0.0]
            continue
        v = 2 if cv.owner[int(y), int(x)] == cv.pid else 1
        kps += [round(float(x), 2), round(float(y), 2), float(v)]
    visible = (cv.owner == cv.pid).astype(np.uint8)
    mask = visible if visible.any() else silhouette
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": kps,
        "num_keypoints": int(sum(1 for v in kps[2::3] if v > 0)),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(silhouette.sum()),
        "iscrowd": 0,
        "segmentation": [_hull_polygon(mask)],
    }


def _hull_polygon(mask: np.ndarray) -> list[float]:
    """The convex hull of a binary mask as a flat COCO polygon ``[x0, y0, x1, y1, ...]``."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        hull = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return [float(v) for v in hull.reshape(-1)]


def _render(
    rng: np.random.Generator, image_id: int, size_range: tuple[int, int]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One RGB image and its person annotations."""
    w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    cv = _Canvas(_background(rng, h, w))
    n = 0 if rng.random() < 0.05 else int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    bodies, silhouettes = [], []
    for pid in range(1, n + 1):
        body = _pose(rng, rng.uniform(0.35, 0.95) * h)
        _place(rng, body, h, w)
        cv.pid = pid
        cv.sil = np.zeros((h, w), dtype=np.uint8)
        _draw_person(cv, body)
        bodies.append(body)
        silhouettes.append(cv.sil)
    if bodies:
        for _ in range(int(rng.random() < 0.35) * int(rng.integers(1, 3))):
            _occlude(rng, cv, bodies)
    anns = []
    for pid, (body, sil) in enumerate(zip(bodies, silhouettes, strict=True), start=1):
        cv.pid = pid
        anns.append(_annotate(cv, body, image_id, image_id * 10 + pid, sil))
    img = cv.image
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.standard_normal(size=img.shape, dtype=np.float32) * rng.uniform(0.0, 8.0)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return img, anns


# ----------------------------------------------------------------------------- the data set


def write_synthetic(
    out: str | Path,
    *,
    n_train: int = DEFAULT_SIZES["train"],
    n_val: int = DEFAULT_SIZES["val"],
    n_test: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    image_size: tuple[int, int] = (128, 256),
) -> Path:
    """Write a COCO-format person-keypoints set with ``train``, ``val`` and ``test`` splits.

    ``image_size`` bounds each image's width and height (drawn independently, so images are
    rarely square). Returns ``out``.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise KdtuneError(f"synthetic: n_{name} must be a non-negative integer, got {n!r}")
    lo, hi = image_size
    if not (isinstance(lo, int) and isinstance(hi, int) and 64 <= lo <= hi <= 4096):
        raise KdtuneError(
            f"synthetic: image_size needs 64 <= low <= high <= 4096, got {image_size!r}"
        )
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        _write_split(out, split, n, seed, (lo, hi))
    return out


def _write_split(out: Path, split: str, n: int, seed: int, size_range: tuple[int, int]) -> None:
    img_dir = out / f"{split}2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
        image_id = _SPLIT_CODE[split] * 1_000_000 + i
        img, anns = _render(rng, image_id, size_range)
        name = f"{image_id:012d}.jpg"
        ok = cv2.imwrite(str(img_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])  # fmt: skip
        if not ok:
            raise KdtuneError(f"synthetic: could not write {img_dir / name}")
        h, w = img.shape[:2]
        images.append({"id": image_id, "file_name": name, "height": h, "width": w, "license": 0})
        annotations.extend(anns)
    doc = {
        "info": {"description": f"kdtune synthetic person keypoints, seed {seed}", "version": "1"},
        "licenses": [{"id": 0, "name": "generated by kdtune", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [person_category()],
    }
    path = out / "annotations" / f"person_keypoints_{split}2017.json"
    path.write_text(json.dumps(doc, separators=(",", ":")))
