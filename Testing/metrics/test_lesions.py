"""Lesion-wise detection on a hand-built case; counts and scores derived by reasoning in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from deepliver.metrics import equivalent_diameter_mm, lesion_metrics

SPACING_ZYX = (1.0, 1.0, 1.0)  # 1 mm voxels: volume in mm³ = voxel count


def hand_built_case():
    ref = np.zeros((64, 64, 64), bool)
    pred = np.zeros_like(ref)
    # A: 4x4x4 = 64 mm³, d = (6*64/pi)^(1/3) = 4.96 mm -> lt10mm; predicted exactly (IoU 1): a match.
    ref[35:39, 2:6, 2:6] = pred[35:39, 2:6, 2:6] = True
    # B: 12^3 = 1728 mm³, d = 14.9 mm -> 10to20mm; predicted as two halves with a gap slice:
    # B1 = 6 slices = 864 voxels (IoU 864/1728 = 0.5, not > 0.5), B2 = 5 slices = 720 (IoU 0.42): B is missed,
    # B1 (d = 11.8) and B2 (d = 11.1) are two false positives in 10to20mm.
    ref[35:47, 10:22, 10:22] = True
    pred[35:41, 10:22, 10:22] = True
    pred[42:47, 10:22, 10:22] = True
    # C: 28^3 = 21952 mm³, d = 34.7 mm -> gt20mm; not predicted: missed.
    ref[2:30, 2:30, 2:30] = True
    # E: 10^3 = 1000 mm³, d = 12.4 -> 10to20mm; predicted shifted by 3 voxels in x:
    # overlap 700, union 1300, IoU 0.54 > 0.5: a match (the predicted E', also 1000 voxels, is 10to20mm).
    ref[2:12, 35:45, 35:45] = True
    pred[2:12, 35:45, 38:48] = True
    # D: a 3^3 = 27 mm³ false positive, d = 3.7 mm -> lt10mm.
    pred[50:53, 50:53, 50:53] = True
    return pred, ref


def test_hand_built_lesion_case():
    pred, ref = hand_built_case()
    m = lesion_metrics(pred, ref, SPACING_ZYX)
    # reference lesions A, B, C, E (4); predicted A, B1, B2, E', D (5); matches A-A and E-E' (2)
    assert (m["lesions_ref"], m["lesions_pred"], m["lesions_matched"]) == (4, 5, 2)
    assert m["lesion_precision"] == pytest.approx(2 / 5)
    assert m["lesion_recall"] == pytest.approx(2 / 4)
    assert m["lesion_f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    # by reference size: lt10 {A found}, 10to20 {B missed, E found}, gt20 {C missed}
    assert (m["lesions_ref_lt10mm"], m["lesions_ref_found_lt10mm"], m["lesion_recall_lt10mm"]) == (1, 1, 1.0)
    assert (m["lesions_ref_10to20mm"], m["lesions_ref_found_10to20mm"]) == (2, 1)
    assert m["lesion_recall_10to20mm"] == 0.5
    assert (m["lesions_ref_gt20mm"], m["lesion_recall_gt20mm"]) == (1, 0.0)
    # by predicted size: lt10 {A true, D false}, 10to20 {B1, B2 false, E' true}, gt20 none
    assert (m["lesions_pred_lt10mm"], m["lesions_pred_true_lt10mm"], m["lesion_precision_lt10mm"]) == (2, 1, 0.5)
    assert (m["lesions_pred_10to20mm"], m["lesions_pred_true_10to20mm"]) == (3, 1)
    assert m["lesion_precision_10to20mm"] == pytest.approx(1 / 3)
    # no predicted gt20 lesion while the reference has one: precision undefined, F1 0
    assert m["lesion_precision_gt20mm"] is None and m["lesion_f1_gt20mm"] == 0.0


def test_corner_touching_voxels_are_one_lesion_and_diameter_formula():
    ref = np.zeros((8, 8, 8), bool)
    ref[1:3, 1:3, 1:3] = True
    ref[3, 3, 3] = True  # 26-connected to the cube: the same lesion
    m = lesion_metrics(ref, ref, (2.0, 1.0, 1.0))
    assert (m["lesions_ref"], m["lesions_pred"], m["lesions_matched"]) == (1, 1, 1)
    assert equivalent_diameter_mm(4 / 3 * np.pi * 5.0 ** 3) == pytest.approx(10.0)


def test_empty_lesion_conventions():
    empty = np.zeros((6, 6, 6), bool)
    one = empty.copy()
    one[2:4, 2:4, 2:4] = True
    none = lesion_metrics(empty, empty, SPACING_ZYX)
    assert (none["lesion_precision"], none["lesion_recall"], none["lesion_f1"]) == (1.0, 1.0, 1.0)
    missed = lesion_metrics(empty, one, SPACING_ZYX)
    assert (missed["lesion_precision"], missed["lesion_recall"], missed["lesion_f1"]) == (None, 0.0, 0.0)
    spurious = lesion_metrics(one, empty, SPACING_ZYX)
    assert (spurious["lesion_precision"], spurious["lesion_recall"], spurious["lesion_f1"]) == (0.0, None, 0.0)
