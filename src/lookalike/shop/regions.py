"""Garment boxes (top, bottom, footwear) and the full-body check, from a person's keypoints.

Every box is the axis-aligned bounds of a few keypoints plus "extension points" placed along the
body's own axes (so a tilted or lying person gets the same construction as an upright one), padded
by a fraction of the torso length ``T`` (mid-shoulder to mid-hip). Then it is clamped to the image,
optionally tightened to the person-segmentation mask, and dropped when too little of it is left.
See docs/shop-the-look.md for the rules in prose and their known failure cases.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lookalike.shop.pose import INDEX, Person

REGIONS = ("top", "bottom", "footwear")          # the classic three: garment_regions' default
EXTRA_REGIONS = ("onepiece", "outerwear", "head", "hands")  # candidates a label probe must confirm
ALL_REGIONS = REGIONS + EXTRA_REGIONS
VISIBLE = 0.5          # a keypoint counts as seen at visibility >= this ...
EDGE_MARGIN = 0.02     # ... and when inside the image grown by this fraction of its size
MIN_SIDE = 12          # px: a clamped box narrower or shorter than this is dropped
MIN_INSIDE = 0.35      # a box with less than this share of its area inside the image is dropped
BOTTOM_ENDS = ("auto", "ankles", "knees")

# Extension points and padding, in torso lengths T (see module docstring).
COLLAR_UP = 0.18       # collar above the shoulder line
HEM_DOWN = 0.12        # top's hem below the hip joints
WAIST_UP = 0.12        # waistband above the hip joints
SHORTS_DOWN = 0.15     # shorts/skirt hem past the knees
ANKLE_DOWN = 0.05      # trouser hem past the ankles
PAD = 0.06             # sideways padding of top and bottom boxes
FOOT_PAD = 0.4         # footwear padding, in foot lengths ...
FOOT_UP = 0.1          # ... except towards the knees: just past the ankles
RAISED_FOOT = 2.0      # feet further apart vertically than this many foot lengths: one is raised
# Partly visible bottoms: when the photo's edge cuts the thighs, the bottom is still boxed (down to
# the edge) if at least this share of the hip -> knee segments lies inside the photo. Mid-thigh is
# 0.5; below ~1/3 the crop is mostly waistband and the top's hem.
PARTIAL_THIGH = 0.35
OUTER_HEM_DOWN = 0.35  # outerwear (jackets, coats) reaches further below the hips than a top
HEAD_UP = 0.6          # a hat's crown above the eyes, in T
HEAD_DOWN = 0.12       # below the nose
HEAD_HALF = 0.28       # half the head box's width at least, in T (ears widen it)
HAND_HALF = 0.22       # half a hand box's side, in T ...
HAND_HANG = 0.45       # ... extended this far past the wrist along the forearm (a bag hangs there)


@dataclass
class Region:
    name: str
    box: list[int]                     # x0, y0, x1, y1 (x1/y1 exclusive), clamped to the image
    visibility: float                  # mean visibility of the keypoints that define it
    keypoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class BodyCheck:
    head: bool
    hips: bool
    ankles: bool

    @property
    def full_body(self) -> bool:
        return self.head and self.hips and self.ankles

    def to_dict(self) -> dict:
        return {"full_body": self.full_body, "head": self.head, "hips": self.hips, "ankles": self.ankles,
                "visibility_threshold": VISIBLE}

    def missing(self) -> list[str]:
        return [part for part in ("head", "hips", "ankles") if not getattr(self, part)]


class _Body:
    """Keypoint look-ups for one person in one image."""

    def __init__(self, person: Person, size: tuple[int, int]):
        self.kp = np.asarray(person.keypoints, dtype=np.float64)
        self.width, self.height = size

    def xy(self, name: str) -> np.ndarray:
        return self.kp[INDEX[name], :2]

    def vis(self, name: str) -> float:
        return float(self.kp[INDEX[name], 2])

    def seen(self, name: str) -> bool:
        x, y, v = self.kp[INDEX[name]]
        mx, my = EDGE_MARGIN * self.width, EDGE_MARGIN * self.height
        return v >= VISIBLE and -mx <= x <= self.width + mx and -my <= y <= self.height + my

    def any_seen(self, *names: str) -> bool:
        return any(self.seen(n) for n in names)

    def below_image(self, name: str) -> bool:
        return self.xy(name)[1] > self.height

    def mid(self, a: str, b: str) -> np.ndarray:
        return (self.xy(a) + self.xy(b)) / 2

    def torso(self) -> tuple[float, np.ndarray]:
        """Torso length T and the unit vector pointing from the hips to the shoulders ("up")."""
        axis = self.mid("left_shoulder", "right_shoulder") - self.mid("left_hip", "right_hip")
        length = float(np.linalg.norm(axis))
        shoulders = float(np.linalg.norm(self.xy("left_shoulder") - self.xy("right_shoulder")))
        up = axis / length if length > 1e-6 else np.array([0.0, -1.0])
        return max(length, 1.2 * shoulders, 1.0), up


def body_check(person: Person, size: tuple[int, int]) -> BodyCheck:
    """The paper's full-body check: head, hips and ankles each seen (one of a pair is enough)."""
    body = _Body(person, size)
    return BodyCheck(head=body.any_seen("nose", "left_eye", "right_eye"),
                     hips=body.any_seen("left_hip", "right_hip"),
                     ankles=body.any_seen("left_ankle", "right_ankle"))


def garment_regions(person: Person, size: tuple[int, int], regions=REGIONS, bottom_end: str = "auto",
                    image: np.ndarray | None = None, use_mask: bool = True) -> tuple[list[Region], list[Skipped]]:
    """Boxes for the requested ``regions`` and the reasons for the ones that were skipped.

    ``bottom_end``: ``ankles`` (trousers), ``knees`` (shorts, skirts, dresses) or ``auto`` (knees when
    the shins look like bare skin in ``image``, an RGB array; ankles otherwise).
    """
    if bottom_end not in BOTTOM_ENDS:
        raise ValueError(f"bottom_end must be one of {', '.join(BOTTOM_ENDS)}, not {bottom_end!r}")
    unknown = [r for r in regions if r not in ALL_REGIONS]
    if unknown:
        raise ValueError(f"unknown region(s) {', '.join(unknown)}; known: {', '.join(ALL_REGIONS)}")
    body = _Body(person, size)
    builders = {"top": _top, "bottom": lambda b: _bottom(b, bottom_end, image), "footwear": _footwear,
                "onepiece": lambda b: _onepiece(b, bottom_end, image), "outerwear": _outerwear,
                "head": _head, "hands": _hands}
    found, skipped = [], []
    for name in regions:
        built = builders[name](body)
        if isinstance(built, str):
            skipped.append(Skipped(name, built))
            continue
        for points, names, notes in (built if isinstance(built, list) else [built]):
            region = _finish(name, points, body, names, notes, person.mask if use_mask else None)
            (skipped if isinstance(region, Skipped) else found).append(region)
    return found, skipped


def _top(body: _Body, hem_down: float = HEM_DOWN):
    shoulders = [n for n in ("left_shoulder", "right_shoulder") if body.seen(n)]
    if not shoulders:
        return "shoulders not visible"
    T, up = body.torso()
    notes = []
    if not body.any_seen("left_hip", "right_hip"):
        notes.append("hips below the photo: box runs to the bottom edge" if body.below_image("left_hip")
                     else "hips hidden: their position is estimated")
    # Sleeves: elbows and wrists widen the box, but not when raised above the shoulder line
    # (a waving hand would stretch the top over the head).
    neck = body.mid("left_shoulder", "right_shoulder")
    arms = [n for n in ("left_elbow", "right_elbow", "left_wrist", "right_wrist")
            if body.seen(n) and float(np.dot(body.xy(n) - neck, up)) <= 0]
    hips = ["left_hip", "right_hip"]
    points = [body.xy(n) for n in shoulders + arms + hips]
    points.append(neck + up * COLLAR_UP * T)
    points += [body.xy(h) - up * hem_down * T for h in hips]
    return _padded(points, PAD * T), shoulders + arms + hips, notes


def _outerwear(body: _Body):
    """A jacket or coat over the top: the top's construction with the hem further down."""
    return _top(body, OUTER_HEM_DOWN)


def _onepiece(body: _Body, bottom_end: str, image: np.ndarray | None):
    """Dress, jumpsuit or long coat: shoulders (and sleeves) down to where the bottom would end."""
    top, bottom = _top(body), _bottom(body, bottom_end, image)
    if isinstance(top, str) or isinstance(bottom, str):
        return top if isinstance(top, str) else bottom
    box = np.concatenate([np.minimum(top[0][:2], bottom[0][:2]), np.maximum(top[0][2:], bottom[0][2:])])
    names = list(dict.fromkeys(top[1] + bottom[1]))
    return box, names, top[2] + bottom[2]


def _head(body: _Body):
    """Head and what sits on it (hats): eyes/ears/nose, up to a crown HEAD_UP·T above the eyes."""
    parts = [n for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear") if body.seen(n)]
    if len(parts) < 2:
        return "head not visible"
    T, up = body.torso()
    pts = np.array([body.xy(n) for n in parts])
    centre = pts.mean(axis=0)
    side = np.array([-up[1], up[0]])
    half = max(HEAD_HALF * T, 0.6 * float(np.ptp(pts @ side)))
    eyes = [body.xy(n) for n in ("left_eye", "right_eye") if body.seen(n)]
    eye = np.mean(eyes, axis=0) if eyes else centre
    points = [eye + up * HEAD_UP * T + side * half, eye + up * HEAD_UP * T - side * half,
              centre - up * HEAD_DOWN * T + side * half, centre - up * HEAD_DOWN * T - side * half]
    return _padded(points + list(pts), 0.0), parts, []


def _hands(body: _Body):
    """One box per visible hand (bags, gloves), hanging past the wrist along the forearm."""
    T, _ = body.torso()
    boxes = []
    for side in ("left", "right"):
        wrist, elbow = f"{side}_wrist", f"{side}_elbow"
        if not body.seen(wrist):
            continue
        fingers = [n for n in (f"{side}_index", f"{side}_pinky", f"{side}_thumb") if body.seen(n)]
        hand = np.mean([body.xy(n) for n in [wrist] + fingers], axis=0)
        forearm = body.xy(wrist) - body.xy(elbow) if body.seen(elbow) else np.array([0.0, 1.0])
        forearm = forearm / max(float(np.linalg.norm(forearm)), 1e-6)
        points = [hand - HAND_HALF * T, hand + HAND_HALF * T, hand + forearm * HAND_HANG * T]
        boxes.append((_padded(points, 0.0), [wrist] + fingers, [f"{side} hand"]))
    return boxes or "hands not visible"


def _bottom(body: _Body, bottom_end: str, image: np.ndarray | None):
    hips = [n for n in ("left_hip", "right_hip") if body.seen(n)]
    if not hips:
        return "hips not visible"
    knees = [n for n in ("left_knee", "right_knee") if body.seen(n)]
    T, up = body.torso()
    if not knees:
        inside = thigh_inside(body)
        if inside is None:
            return "knees not visible"
        if inside < PARTIAL_THIGH:
            return (f"knees not visible and only {inside:.0%} of the thighs is inside the photo "
                    f"(needs {PARTIAL_THIGH:.0%})")
        # Cut by the photo's edge: box from the waistband down along the thighs as far as they are
        # seen; _finish clamps it to the photo.
        points = [body.xy(n) for n in hips] + [body.xy(h) + up * WAIST_UP * T for h in hips]
        for hip in hips:
            knee = hip.replace("hip", "knee")
            points.append(body.xy(hip) + (body.xy(knee) - body.xy(hip)) * inside)
        return (_padded(points, PAD * T), hips,
                [f"cut by the photo's edge: {inside:.0%} of the thighs visible (needs {PARTIAL_THIGH:.0%})"])
    ankles = [n for n in ("left_ankle", "right_ankle") if body.seen(n)]
    notes, end = [], bottom_end
    if end == "auto":
        end = "ankles"
        if ankles and image is not None and _bare_shins(body, image, T):
            end = "knees"
            notes.append("shins look bare: ends at the knees (shorts, skirt or dress)")
    if end == "ankles" and not ankles:
        end = "knees"
        notes.append("ankles not visible: ends at the knees")
    points = [body.xy(n) for n in hips + knees]
    points += [body.xy(h) + up * WAIST_UP * T for h in hips]
    if end == "ankles":
        for ankle in ankles:
            knee = ankle.replace("ankle", "knee")
            shin = body.xy(ankle) - body.xy(knee)
            points.append(body.xy(ankle) + shin / max(np.linalg.norm(shin), 1e-6) * ANKLE_DOWN * T)
        used = hips + knees + ankles
    else:
        for knee in knees:
            thigh = body.xy(knee) - body.xy(knee.replace("knee", "hip"))
            points.append(body.xy(knee) + thigh / max(np.linalg.norm(thigh), 1e-6) * SHORTS_DOWN * T)
        used = hips + knees
    return _padded(points, PAD * T), used, notes


def thigh_inside(body: _Body) -> float | None:
    """Share of the hip -> knee segments (both legs, predicted keypoints) inside the photo, or None
    when the knees are not predicted outside it (they are hidden, not cut off)."""
    shares = []
    for side in ("left", "right"):
        hip, knee = body.xy(f"{side}_hip"), body.xy(f"{side}_knee")
        if float(np.linalg.norm(knee - hip)) < 1.0:
            continue
        if 0 <= knee[0] <= body.width and 0 <= knee[1] <= body.height:
            continue  # this knee is inside the photo (just not seen): not a cut by the edge
        shares.append(_inside_share(hip, knee, body.width, body.height))
    return float(np.mean(shares)) if shares else None


def _inside_share(a: np.ndarray, b: np.ndarray, width: float, height: float) -> float:
    """Share of the segment a -> b inside [0, width] x [0, height] (Liang-Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    d = b - a
    for p, q in ((-d[0], a[0]), (d[0], width - a[0]), (-d[1], a[1]), (d[1], height - a[1])):
        if abs(p) < 1e-12:
            if q < 0:
                return 0.0
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    return max(0.0, t1 - t0)


def _footwear(body: _Body):
    feet = []
    for side in ("left", "right"):
        parts = [f"{side}_ankle", f"{side}_heel", f"{side}_foot_index"]
        seen = [p for p in parts if body.seen(p)]
        if body.seen(parts[0]) and len(seen) >= 2:
            feet.append(seen)
    if not feet:
        return "feet not visible (ankles, heels or toes hidden or outside the photo)"
    T, _ = body.torso()
    notes = []
    lengths = [max(float(np.linalg.norm(body.xy(f[0]) - body.xy(f[-1]))), 0.08 * T) for f in feet]
    foot = max(lengths)
    if len(feet) == 2:
        lowest = [max(body.xy(p)[1] for p in f) for f in feet]
        if abs(lowest[0] - lowest[1]) > RAISED_FOOT * foot:
            feet = [feet[int(np.argmax(lowest))]]
            notes.append("one foot is raised: box kept on the standing foot")
    names = [p for f in feet for p in f]
    box = _padded([body.xy(p) for p in names], FOOT_PAD * foot)
    # On the leg's side the box stops just past the ankles: the full pad there took in the trouser
    # hem and halved the share of shoes among the results (measured, docs/shop-the-look.md).
    ankles = np.array([body.xy(f[0]) for f in feet])
    leg = np.mean([body.xy(f[0].replace("ankle", "knee")) for f in feet], axis=0) - ankles.mean(axis=0)
    axis = int(abs(leg[1]) >= abs(leg[0]))  # 0: leg runs along x, 1: along y
    if leg[axis] < 0:
        box[axis] = max(box[axis], ankles[:, axis].min() - FOOT_UP * foot)
    else:
        box[axis + 2] = min(box[axis + 2], ankles[:, axis].max() + FOOT_UP * foot)
    return box, names, notes


def _padded(points, pad: float) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return np.array([pts[:, 0].min() - pad, pts[:, 1].min() - pad, pts[:, 0].max() + pad, pts[:, 1].max() + pad])


def _finish(name, box, body: _Body, names, notes, mask) -> Region | Skipped:
    """Clamp to the image, check what is left, tighten to the person mask."""
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    cx0, cy0 = max(0.0, x0), max(0.0, y0)
    cx1, cy1 = min(float(body.width), x1), min(float(body.height), y1)
    if cx1 - cx0 < MIN_SIDE or cy1 - cy0 < MIN_SIDE:
        return Skipped(name, f"box too small or outside the photo ({cx1 - cx0:.0f}x{cy1 - cy0:.0f} px)")
    if (cx1 - cx0) * (cy1 - cy0) / area < MIN_INSIDE:
        return Skipped(name, f"less than {MIN_INSIDE:.0%} of the box is inside the photo")
    clamped = [int(np.floor(cx0)), int(np.floor(cy0)), int(np.ceil(cx1)), int(np.ceil(cy1))]
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        notes = notes + ["clamped to the photo"]
    if mask is not None:
        clamped, tightened = tighten_to_mask(clamped, mask)
        if tightened:
            notes = notes + ["tightened to the person mask"]
    visibility = float(np.mean([body.vis(n) for n in names]))
    return Region(name, clamped, round(visibility, 3), list(names), notes)


def tighten_to_mask(box: list[int], mask: np.ndarray, threshold: float = 0.5, min_share: float = 0.02,
                    keep: int = 2) -> tuple[list[int], bool]:
    """Shrink ``box`` to the rows/columns where the person mask covers at least ``min_share`` of the
    box's height/width (so background margins go, stray mask pixels do not count). Never grows it."""
    x0, y0, x1, y1 = box
    inside = np.asarray(mask[y0:y1, x0:x1]) > threshold
    if inside.size == 0 or inside.mean() < 0.05:
        return box, False  # mask missed this part of the body: trust the keypoints
    cols = np.flatnonzero(inside.sum(axis=0) >= min_share * inside.shape[0])
    rows = np.flatnonzero(inside.sum(axis=1) >= min_share * inside.shape[1])
    if len(cols) == 0 or len(rows) == 0:
        return box, False
    new = [max(x0, x0 + int(cols[0]) - keep), max(y0, y0 + int(rows[0]) - keep),
           min(x1, x0 + int(cols[-1]) + 1 + keep), min(y1, y0 + int(rows[-1]) + 1 + keep)]
    if new[2] - new[0] < MIN_SIDE or new[3] - new[1] < MIN_SIDE:
        return box, False
    return new, new != list(box)


def _bare_shins(body: _Body, image: np.ndarray, T: float) -> bool:
    """True when most pixels sampled along the visible shins (knee -> ankle) are skin-coloured."""
    samples = []
    half = max(1, int(0.03 * T))
    for side in ("left", "right"):
        if not (body.seen(f"{side}_knee") and body.seen(f"{side}_ankle")):
            continue
        knee, ankle = body.xy(f"{side}_knee"), body.xy(f"{side}_ankle")
        for t in np.linspace(0.3, 0.8, 6):
            x, y = (knee + t * (ankle - knee)).astype(int)
            patch = image[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1]
            if patch.size:
                samples.append(skin_share(patch))
    return bool(samples) and float(np.mean(samples)) > 0.5


def skin_share(rgb: np.ndarray) -> float:
    """Share of pixels inside a classic YCrCb skin range (Chai & Ngan 1999); crude but cheap."""
    px = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 128
    cb = (b - y) * 0.564 + 128
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (y > 60)
    return float(skin.mean()) if len(px) else 0.0


BARE_HEAD_SKIN = 0.33   # skin share of the head box's middle band from which the head counts as bare


def bare_head(box: list[int], image: np.ndarray) -> float | None:
    """Skin share (:func:`skin_share`) of the middle band (25-75 % of the height) of a head box: the
    forehead and top of the head, which a hat covers. A value of at least :data:`BARE_HEAD_SKIN`
    means a bare head (measured on the shared people photos: caps and beanies 0.02-0.28, bare heads
    0.36-0.47). None for an empty band."""
    x0, y0, x1, y1 = box
    h = y1 - y0
    band = np.asarray(image)[y0 + h // 4: y0 + 3 * h // 4, x0:x1]
    return skin_share(band) if band.size else None


# -- one garment or two, without a label probe ---------------------------------------------
ONEPIECE_COLOUR = 40.0   # RGB distance (0..441) under which two patches count as the same fabric


def fabric_colours(person: Person, size: tuple[int, int], image: np.ndarray) -> tuple[float, float] | None:
    """RGB distances (0..441) between the mean colour of a patch just above the hips and one just
    below them (``waist``), and between that one and a patch between the thighs (``legs``: small
    when a skirt or dress covers the gap, large when trousers show the background there).
    None when those points are not in the photo or the hips or shoulders are not seen."""
    body = _Body(person, size)
    if not (body.any_seen("left_hip", "right_hip") and body.any_seen("left_shoulder", "right_shoulder")):
        return None
    T, up = body.torso()
    hips = body.mid("left_hip", "right_hip")
    knees = body.mid("left_knee", "right_knee")
    half = max(1, int(0.05 * T))

    def patch(point: np.ndarray) -> np.ndarray | None:
        x, y = int(round(point[0])), int(round(point[1]))
        if not (0 <= x < body.width and 0 <= y < body.height):
            return None
        found = np.asarray(image[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1], np.float64)
        return found.reshape(-1, 3).mean(axis=0) if found.size else None

    above, below = patch(hips + up * 0.2 * T), patch(hips - up * 0.2 * T)
    gap = patch(hips + 0.6 * (knees - hips))
    if above is None or below is None or gap is None:
        return None
    return float(np.linalg.norm(above - below)), float(np.linalg.norm(below - gap))


def onepiece_by_colour(person: Person, size: tuple[int, int], image: np.ndarray) -> tuple[bool, str]:
    """The geometric rule used when the catalog has no label probe: one garment from the shoulders
    down when the fabric just above the hips, just below them, and between the thighs (where a skirt
    covers the gap and trousers show the background) all have the same colour (RGB distances of
    :func:`fabric_colours` both under :data:`ONEPIECE_COLOUR`). Returns the decision and why."""
    found = fabric_colours(person, size, image)
    if found is None:
        return False, "waist or thighs not in the photo"
    waist, legs = found
    same = waist < ONEPIECE_COLOUR and legs < ONEPIECE_COLOUR
    return same, (f"colour change at the waist {waist:.0f}, between the thighs {legs:.0f} "
                  f"(one garment when both < {ONEPIECE_COLOUR:.0f})")
