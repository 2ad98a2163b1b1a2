"""The status line after a save, and the provenance the module writes into the case manifest."""

from __future__ import annotations

from typing import Any, Callable, Optional

TOOL_NAME = "SlicerDeepLiver"


def case_summary(result: Any, tr: Callable[[str], str] = str) -> str:
    """``Case 1a2b...: liver 1520.3 mL, tumor 12.0 mL, 2 lesion(s)`` from an export result.

    ``result`` has ``case_id``, ``volumes_ml`` (label name -> mL) and ``lesion_count``, as
    ``deepliver.dataset.export_case`` returns. ``tr`` translates the template (placeholders kept).
    """
    from deepliver.labels import LIVER, TUMOR

    volumes = dict(getattr(result, "volumes_ml", {}) or {})
    return tr("Case {case_id}: liver {liver:.1f} mL, tumor {tumor:.1f} mL, {lesions} lesion(s)").format(
        case_id=result.case_id, liver=float(volumes.get(LIVER.name, 0.0)),
        tumor=float(volumes.get(TUMOR.name, 0.0)), lesions=int(getattr(result, "lesion_count", 0) or 0))


def annotation_provenance(slicer_version: str, *, started_from: Optional[dict[str, Any]] = None,
                          structures: Optional[list[str]] = None, annotator: Optional[str] = None) -> dict[str, Any]:
    """What the manifest records about how the label was made.

    ``started_from`` describes an earlier label the annotator corrected (a saved case, or a model
    result: ``bundles.model_provenance``, ``{"kind": "model", "bundle": ..., "version": ..., "models": ...}``);
    None for a label drawn from scratch, then ``method`` is ``manual``, else ``corrected`` with
    ``corrected_by`` the annotator. ``structures`` names the segments that went into the label.
    """
    provenance: dict[str, Any] = {"tool": TOOL_NAME, "slicer_version": str(slicer_version),
                                  "method": "manual" if started_from is None else "corrected"}
    if started_from is not None:
        provenance["started_from"] = dict(started_from)
        provenance["corrected_by"] = annotator or None
    if structures is not None:
        provenance["structures"] = list(structures)
    return provenance
