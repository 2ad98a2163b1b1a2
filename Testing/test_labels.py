import numpy as np
import pytest

from deepliver import labels
from deepliver.errors import LabelError


def test_table_is_the_msd_convention():
    assert [(l.value, l.name) for l in labels.LABELS] == [(0, "background"), (1, "liver"), (2, "tumor")]
    assert labels.label_by_name("Liver") is labels.LIVER
    assert labels.label_by_value(2) is labels.TUMOR
    assert len({l.color for l in labels.LABELS}) == 3
    # SNOMED CT: liver 10200004 (anatomical structure 123037004), tumor inside the liver
    assert labels.LIVER.type.as_tuple() == ("10200004", "SCT", "Liver")
    assert labels.LIVER.category.value == "123037004"
    assert labels.TUMOR.region.value == "10200004"


def test_check_label_values_names_the_file_and_bad_values():
    labels.check_label_values(np.array([[0, 1], [2, 2]], dtype=np.uint8))
    with pytest.raises(LabelError) as e:
        labels.check_label_values(np.array([0, 1, 3, 7], dtype=np.uint8), "case.nii.gz")
    assert str(e.value).startswith("case.nii.gz: label values outside the table")
    assert "3, 7" in str(e.value)
    with pytest.raises(LabelError):
        labels.check_label_values(np.array([0.0, 0.5, np.nan]))


def test_slicer_terminology_entry_has_seven_fields_with_codes():
    entry = labels.slicer_terminology_entry(labels.LIVER)
    fields = entry.split("~")
    assert len(fields) == 7
    assert fields[2] == "SCT^10200004^Liver"
