"""Overlap, surface-distance and lesion-wise metrics of label maps (no torch).

``evaluate_pair`` (two ``SimpleITK`` label images) and ``evaluate_files`` (files or folders) are the entry
points; ``evaluate_arrays`` works on ``(z, y, x)`` arrays. Each metric family and its conventions (empty
masks, HD95 definition, lesion matching rule, size buckets) is documented in its own module and in
``DEFINITIONS``; ``tables`` writes the CSV and the console table.
"""

from deepliver.metrics.evaluate import (DEFINITIONS, LABEL_NAMES, METRICS, case_files, evaluate_arrays,
                                        evaluate_files, evaluate_pair, summarize)
from deepliver.metrics.lesions import (LESION_METRICS, SIZE_BINS, detection_scores, equivalent_diameter_mm,
                                       lesion_metrics, match_lesions)
from deepliver.metrics.overlap import OVERLAP_METRICS, confusion_counts, overlap_metrics
from deepliver.metrics.surface import (HD95_DEFINITION, SURFACE_METRICS, boundary, surface_distances,
                                       surface_metrics)
from deepliver.metrics.tables import csv_rows, format_table, write_csv

__all__ = [
    "DEFINITIONS", "LABEL_NAMES", "METRICS", "case_files", "evaluate_arrays", "evaluate_files", "evaluate_pair",
    "summarize", "LESION_METRICS", "SIZE_BINS", "detection_scores", "equivalent_diameter_mm", "lesion_metrics",
    "match_lesions", "OVERLAP_METRICS", "confusion_counts", "overlap_metrics", "HD95_DEFINITION",
    "SURFACE_METRICS", "boundary", "surface_distances", "surface_metrics", "csv_rows", "format_table",
    "write_csv",
]
