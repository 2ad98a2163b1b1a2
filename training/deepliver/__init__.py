"""SlicerDeepLiver: liver and liver-tumor segmentation from DICOM to a trusted label map.

Public entry points live in the stage packages (``deepliver.imaging``, ``deepliver.dataset``, ...);
``deepliver.labels`` is the single label table.
"""

import os as _os

# Intel MKL (linked into torch on x86) picks code paths by memory alignment unless told not to, so two
# identical training steps can differ in the last bit (seen: Faster R-CNN's box head on a busy 2-core
# machine; a resumed run drifted from an uninterrupted one). STRICT makes its results independent of
# alignment at no measurable cost here (2D U-Net and Faster R-CNN steps). MKL reads this once, at its first
# call: it only takes effect when deepliver is imported before torch computes anything. Set MKL_CBWR
# yourself to choose otherwise.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

__all__ = ["__version__"]
