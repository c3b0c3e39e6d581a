"""Garment boxes and the full-body check from synthetic keypoints, checked against boxes worked out
by hand from the rules in lookalike.shop.regions (torso T = 100 px, so every offset is easy to follow)."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.shop.pose import LANDMARKS
from lookalike.shop.regions import body_check, garment_regions, skin_share, tighten_to_mask

from fakes import UPRIGHT, upright_person

# Worked out by hand (x0, y0, x1, y1):
#   top: x 65..135 (wrists), y 62 (collar = shoulders - 0.18T) .. 192 (hem = hips + 0.12T), pad 6
#   bottom: x 88..112, y 168 (waist = hips - 0.12T) .. 345 (ankles + 0.05T), pad 6
#   footwear: x 86..122, y 340..356, pad 0.4 * foot length (ankle->toe = 18.87) = 7.55, except
#             towards the knees: ankles - 0.1 * foot length = 338.1
TOP, BOTTOM, FOOTWEAR = [59, 56, 141, 198], [82, 162, 118, 351], [78, 338, 130, 364]
BOTTOM_TO_KNEES = [82, 162, 118, 281]  # knees + 0.15T along the thigh = 275, pad 6


def boxes(p, size, **kwargs):
    found, skipped = garment_regions(p, size, **kwargs)
    return {r.name: r.box for r in found}, {s.name: s.reason for s in skipped}


def close(a, b, tol=1):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_full_body_boxes():
    got, skipped = boxes(upright_person(), (200, 400))
    assert not skipped
    assert close(got["top"], TOP) and close(got["bottom"], BOTTOM) and close(got["footwear"], FOOTWEAR)
    assert body_check(upright_person(), (200, 400)).full_body


def test_cut_at_knees_ends_bottom_at_knees_and_skips_feet():
    # same body in a photo only 300 px tall: ankles, heels, toes fall below it (low visibility)
    hidden = {n: 0.2 for n in ("left_ankle", "right_ankle", "left_heel", "right_heel",
                               "left_foot_index", "right_foot_index")}
    got, skipped = boxes(upright_person(visibility=hidden), (200, 300))
    assert close(got["top"], TOP) and close(got["bottom"], BOTTOM_TO_KNEES)
    assert "footwear" in skipped and "feet not visible" in skipped["footwear"]
    check = body_check(upright_person(visibility=hidden), (200, 300))
    assert not check.full_body and check.missing() == ["ankles"]


def test_no_feet_visible_ends_at_knees():
    hidden = {n: 0.1 for n in ("left_ankle", "right_ankle", "left_heel", "right_heel",
                               "left_foot_index", "right_foot_index")}
    found, skipped = garment_regions(upright_person(visibility=hidden), (200, 400))
    bottom = next(r for r in found if r.name == "bottom")
    assert close(bottom.box, BOTTOM_TO_KNEES)
    assert any("ankles not visible" in n for n in bottom.notes)
    assert [s.name for s in skipped] == ["footwear"]


def test_keypoints_off_image_count_as_unseen():
    # visible by the model's score but far outside the photo: treated as unseen
    outside = {n: (p[0], p[1] + 300) for n, p in UPRIGHT.items()
               if n.endswith(("ankle", "heel", "foot_index"))}
    got, skipped = boxes(upright_person({**UPRIGHT, **outside}), (200, 400))
    assert "footwear" in skipped and close(got["bottom"], BOTTOM_TO_KNEES)


def test_upper_body_photo_top_runs_to_bottom_edge():
    # hips predicted below a 200 x 150 photo with low visibility (like the boy photo)
    low = {n: 0.3 for n in LANDMARKS[23:]}
    found, skipped = garment_regions(upright_person(visibility=low), (200, 150))
    top = found[0]
    # the wrists (y = 170) are outside the photo too, so the elbows set the width: 70..130 +- 6
    assert top.name == "top" and top.box == [64, 56, 136, 150]
    assert any("hips below the photo" in n for n in top.notes)
    assert {s.name: s.reason for s in skipped} == {"bottom": "hips not visible", "footwear": skipped[1].reason}
    assert not body_check(upright_person(visibility=low), (200, 150)).hips


def test_lying_person_gets_rotated_boxes():
    # rotate 90 degrees into a 400 x 200 image: (x, y) -> (y, 200 - x); boxes rotate the same way
    def rot(xy):
        return np.stack([xy[:, 1], 200 - xy[:, 0]], axis=1)

    def rot_box(b):
        return [b[1], 200 - b[2], b[3], 200 - b[0]]

    got, skipped = boxes(upright_person(transform=rot), (400, 200))
    assert not skipped
    for name, expected in (("top", TOP), ("bottom", BOTTOM), ("footwear", FOOTWEAR)):
        assert close(got[name], rot_box(expected)), (name, got[name], rot_box(expected))


def test_tilted_person_top_box():
    # 30 degrees about the hips' midpoint: the expected top is the bounds of the hand-listed
    # construction points (shoulders, elbows, wrists, hips, collar, hems) rotated the same way, + 6 px
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([100.0, 180.0])

    def tilt(xy):
        return (xy - centre) @ rot.T + centre + np.array([100.0, 50.0])

    construction = np.array([UPRIGHT[n] for n in ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                                                  "left_wrist", "right_wrist", "left_hip", "right_hip")]
                            + [(100, 62), (112, 192), (88, 192)], dtype=float)
    pts = tilt(construction)
    expected = [pts[:, 0].min() - 6, pts[:, 1].min() - 6, pts[:, 0].max() + 6, pts[:, 1].max() + 6]
    got, _ = boxes(upright_person(transform=tilt), (400, 500), regions=("top",))
    assert close(got["top"], expected)


def test_raised_arm_does_not_stretch_top_over_head():
    raised = {**UPRIGHT, "left_elbow": (140, 60), "left_wrist": (150, 10)}
    got, _ = boxes(upright_person(raised), (200, 400), regions=("top",))
    # the raised left arm is left out: collar on top (not the hand at y = 10), left shoulder on the right
    assert got["top"] == [59, 56, 126, 198]


def test_raised_foot_keeps_the_standing_foot():
    tree = {**UPRIGHT, "left_ankle": (100, 250), "left_heel": (96, 256), "left_foot_index": (108, 262)}
    found, _ = garment_regions(upright_person(tree), (200, 400), regions=("footwear",))
    foot = found[0]
    assert foot.box[1] > 300 and "right_ankle" in foot.keypoints and "left_ankle" not in foot.keypoints
    assert any("raised" in n for n in foot.notes)


def test_partly_outside_photo_is_clamped_or_dropped():
    shifted = {n: (x - 75, y) for n, (x, y) in UPRIGHT.items()}
    found, _ = garment_regions(upright_person(shifted), (200, 400))
    top = next(r for r in found if r.name == "top")
    assert top.box[0] == 0 and "clamped to the photo" in top.notes
    gone = {n: (x - 300, y) for n, (x, y) in UPRIGHT.items()}
    found, skipped = garment_regions(upright_person(gone), (200, 400))
    assert not found and len(skipped) == 3


def test_mask_tightens_but_never_grows():
    mask = np.zeros((400, 200), dtype=np.float32)
    mask[:, 80:120] = 1.0  # a narrow person inside the wide top box
    box, changed = tighten_to_mask(TOP, mask)
    assert changed and box == [78, 56, 122, 198]
    assert tighten_to_mask(TOP, np.zeros_like(mask)) == (TOP, False)  # mask missed: keep the keypoint box
    p = upright_person()
    p.mask = mask
    got, _ = boxes(p, (200, 400))
    assert got["top"] == [78, 56, 122, 198]
    assert boxes(p, (200, 400), use_mask=False)[0]["top"] == TOP


def test_bare_shins_end_bottom_at_knees_in_auto_mode():
    image = np.full((400, 200, 3), (60, 80, 140), dtype=np.uint8)  # denim everywhere
    assert boxes(upright_person(), (200, 400), image=image)[0]["bottom"] == BOTTOM
    image[260:340, 80:120] = (224, 172, 140)  # skin between knees and ankles
    assert skin_share(image[300:310, 85:95]) == 1.0 and skin_share(image[0:10, 0:10]) == 0.0
    assert close(boxes(upright_person(), (200, 400), image=image)[0]["bottom"], BOTTOM_TO_KNEES)
    assert boxes(upright_person(), (200, 400), image=image, bottom_end="ankles")[0]["bottom"] == BOTTOM


def test_bad_arguments():
    with pytest.raises(ValueError, match="bottom_end"):
        garment_regions(upright_person(), (200, 400), bottom_end="hem")
    with pytest.raises(ValueError, match="unknown region"):
        garment_regions(upright_person(), (200, 400), regions=("hat",))


def test_bottom_cut_by_the_photo_edge_is_searched_when_enough_thigh_is_seen():
    from lookalike.shop.regions import PARTIAL_THIGH

    # hips at y=180, knees at y=260 (predicted below the photo, low visibility): a 230-px photo shows
    # (230 - 180) / 80 = 62% of the thighs, a 200-px one 25%
    below = {n: 0.1 for n in ("left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
                              "left_foot_index", "right_foot_index")}
    assert 0.25 < PARTIAL_THIGH < 0.5  # mid-thigh passes, a quarter does not
    got, skipped = boxes(upright_person(visibility=below), (200, 230))
    assert "bottom" in got and got["bottom"][3] == 230 and got["bottom"][1] == 162  # waistband to the edge
    found, _ = garment_regions(upright_person(visibility=below), (200, 230))
    note = next(r for r in found if r.name == "bottom").notes
    assert any("cut by the photo's edge: 62% of the thighs" in n for n in note)
    got, skipped = boxes(upright_person(visibility=below), (200, 200))
    assert "bottom" not in got and "only 25% of the thighs" in skipped["bottom"]
    assert f"needs {PARTIAL_THIGH:.0%}" in skipped["bottom"]
    # knees inside the photo but not seen (hidden behind something): not a cut, so no partial box
    got, skipped = boxes(upright_person(visibility=below), (200, 400))
    assert skipped["bottom"] == "knees not visible"


def test_extra_candidate_regions_head_hands_onepiece_outerwear():
    found, skipped = garment_regions(upright_person(), (200, 400), ("head", "hands", "onepiece", "outerwear", "top"))
    got = {}
    for region in found:
        got.setdefault(region.name, []).append(region)
    (head,) = got["head"]
    # eyes at y=35, crown 0.6T above them (clamped to 0); 0.12T below the centre of the face points
    # (y=38); ears x 90..110 but at least 0.28T each side of the centre
    assert close(head.box, [72, 0, 128, 50], tol=2) and "nose" in head.keypoints
    assert [r.notes for r in got["hands"]] == [["left hand"], ["right hand"]]
    left = got["hands"][0].box  # left wrist (135, 170): +-0.22T, hanging 0.45T along the forearm
    assert left[0] <= 113 and left[2] >= 157 and left[3] >= 210
    (one,), (outer,), (top,) = got["onepiece"], got["outerwear"], got["top"]
    assert one.box[1] == top.box[1] and one.box[3] == BOTTOM[3]  # shoulders (collar) to the trouser hem
    assert outer.box[3] > top.box[3] and outer.box[:3] == top.box[:3]  # coats reach further down
    with pytest.raises(ValueError, match="unknown region"):
        garment_regions(upright_person(), (200, 400), ("hat",))
