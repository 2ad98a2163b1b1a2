"""Faster R-CNN from torchvision for 2D boxes on axial CT slices.

Three variants: ``resnet50_fpn_v2`` (``torchvision.models.detection.fasterrcnn_resnet50_fpn_v2``, the
default), ``mobilenet_v3_large_fpn`` (``fasterrcnn_mobilenet_v3_large_fpn``, about 3-7x faster on CPU; its
FPN takes the last two stages, both at stride 32: 8x8 maps at 256 px, too coarse for lesions of 5-20
pixels), and ``mobilenet_v3_large_fpn_s8``: the same MobileNetV3 with an FPN on the stride 8, 16 and 32
stages (torchvision's ``_mobilenet_extractor`` with those returned stages), at about the mobilenet's cost. The
network is always built with ``weights=None`` and ``weights_backbone=None`` (random initialisation, nothing
downloaded); ``pretrained=True`` is for training only and lets torchvision fetch its ImageNet/COCO weights
(needs internet; never used by tests or the demo). A bundle's weights replace whatever was built.

Input: a batch of ``(3, H, W)`` float tensors in [0, 1] (a windowed uint8 slice / 255, repeated on three
channels); boxes ``[x1, y1, x2, y2]`` float pixel-edge coordinates, ``0 <= x1 < x2 <= W`` (torchvision's
convention; a box of inclusive pixels ``x_min..x_max`` is ``[x_min, x_max + 1)``); class 1 is the object
(tumor or liver), 0 the background. The transform's ``min_size`` and ``max_size`` are set to the slice size
so a 512 slice is not upscaled to torchvision's default 800 (1.8 s instead of 2.8 s a training step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from deepliver.errors import ConfigError

__all__ = ["VARIANTS", "FasterRCNNArgs", "build_fasterrcnn", "slice_tensor"]

VARIANTS = ("resnet50_fpn_v2", "mobilenet_v3_large_fpn", "mobilenet_v3_large_fpn_s8")
ANCHORS_AT_512 = (16, 32, 64, 128, 256)
"""Anchor sizes (pixels) for a 512 slice, half torchvision's (32-512): lesions of 5-20 mm are 6-25 pixels
there. Scaled with the slice size (at least 4 pixels); 3 aspect ratios (0.5, 1, 2) as torchvision."""


@dataclass(frozen=True)
class FasterRCNNArgs:
    """What ``model.json``'s ``arch_args`` hold for a Faster R-CNN bundle.

    ``image_size``: the square slice size in pixels the network sees (``min_size = max_size``);
    ``num_classes`` counts the background (2: background + the task's structure);
    ``box_score_thresh`` / ``box_nms_thresh`` / ``box_detections_per_img``: torchvision's post-processing;
    ``box_batch_size_per_image``: proposals sampled per slice to train the box head (torchvision's 512; on
    CPU the resnet50 v2 box head on them dominates a step: 128 halved a 256 px, batch 2 step here);
    ``anchor_sizes``: 5 sizes in pixels, None for ``ANCHORS_AT_512`` scaled to ``image_size``;
    ``rpn_post_nms_top_n_test``: proposals per slice the box head scores at inference (torchvision's 1000;
    the box head's first layer costs ~13 MMAC a proposal, so 1000 of them cost ~50x a 256 px mobilenet
    backbone pass: 100 is plenty for a few lesions a slice).
    """

    variant: str = "resnet50_fpn_v2"
    num_classes: int = 2
    image_size: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_batch_size_per_image: int = 512
    anchor_sizes: Optional[tuple[int, ...]] = None
    rpn_post_nms_top_n_test: int = 1000

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown Faster R-CNN variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if self.image_size < 32:
            raise ConfigError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if self.anchor_sizes is not None:
            object.__setattr__(self, "anchor_sizes", tuple(int(v) for v in self.anchor_sizes))
            if len(self.anchor_sizes) != 5 or min(self.anchor_sizes) < 1:
                raise ConfigError(f"anchor_sizes needs 5 positive sizes in pixels (one per pyramid level), got "
                                  f"{list(self.anchor_sizes)}")

    @property
    def anchors(self) -> tuple[int, ...]:
        """The anchor sizes in pixels: ``anchor_sizes``, or ``ANCHORS_AT_512`` scaled to ``image_size``."""
        if self.anchor_sizes is not None:
            return self.anchor_sizes
        return tuple(max(4, int(round(a * self.image_size / 512))) for a in ANCHORS_AT_512)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FasterRCNNArgs":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown Faster R-CNN argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["anchor_sizes"] = list(self.anchors)   # recorded explicitly in model.json
        return data


def build_fasterrcnn(args: Any, pretrained: bool = False):
    """A torchvision ``FasterRCNN`` for ``args`` (randomly initialised unless ``pretrained``).

    ``args``: ``FasterRCNNArgs``, its dict, or a ``ModelConfig`` (its ``arch_args``; the registry's call).

    ``pretrained`` asks torchvision for its COCO weights (ImageNet backbone) and replaces the box
    predictor for ``num_classes``; it downloads on first use and fails without internet.
    """
    from torchvision.models import detection
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    if hasattr(args, "arch_args"):
        args = args.arch_args
    if isinstance(args, dict):
        args = FasterRCNNArgs.from_dict(args)
    factory = {"resnet50_fpn_v2": detection.fasterrcnn_resnet50_fpn_v2,
               "mobilenet_v3_large_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
               "mobilenet_v3_large_fpn_s8": _mobilenet_s8}[args.variant]
    options = dict(min_size=args.image_size, max_size=args.image_size, box_score_thresh=args.box_score_thresh,
                   box_nms_thresh=args.box_nms_thresh, box_detections_per_img=args.box_detections_per_img,
                   box_batch_size_per_image=args.box_batch_size_per_image,
                   rpn_post_nms_top_n_test=args.rpn_post_nms_top_n_test)
    if not pretrained:
        return _with_anchors(factory(weights=None, weights_backbone=None, num_classes=args.num_classes, **options),
                             args)
    if args.variant == "mobilenet_v3_large_fpn_s8":
        raise ConfigError("--pretrained has no COCO weights for mobilenet_v3_large_fpn_s8; use "
                          "mobilenet_v3_large_fpn or resnet50_fpn_v2 with --pretrained")
    weights = {"resnet50_fpn_v2": detection.FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT,
               "mobilenet_v3_large_fpn": detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.DEFAULT}[args.variant]
    try:
        model = factory(weights=weights, **options)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise ConfigError(f"--pretrained could not get torchvision's {args.variant} weights ({e}); connect to "
                          "the internet once (torchvision caches them) or train without --pretrained") from e
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, args.num_classes)
    return _with_anchors(model, args)


def _mobilenet_s8(weights=None, weights_backbone=None, num_classes: int = 2, **options):
    """``fasterrcnn_mobilenet_v3_large_fpn`` (random weights, BatchNorm) with its FPN on the stride 8, 16 and
    32 stages (feature maps at strides 8, 16, 32 and a max-pooled 64); anchors are set by ``_with_anchors``."""
    from torch import nn
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor

    features = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d)
    stages = 2 + sum(1 for b in features.features if getattr(b, "_is_cn", False))
    backbone = _mobilenet_extractor(features, True, stages, returned_layers=[stages - 4, stages - 3, stages - 1])
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 4, ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors, **options)


def _with_anchors(model, args: FasterRCNNArgs):
    """Replace torchvision's anchor generator by one with ``args.anchors`` (same anchors per location, so
    the RPN head is unchanged): one size per level for resnet50 FPN (5 levels), all five on each of the
    mobilenet's 3 levels (4 for ``mobilenet_v3_large_fpn_s8``)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = args.anchors
    levels = 4 if args.variant == "mobilenet_v3_large_fpn_s8" else 3
    per_level = tuple((s,) for s in sizes) if args.variant == "resnet50_fpn_v2" else (sizes,) * levels
    model.rpn.anchor_generator = AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(per_level))
    return model


def slice_tensor(pixels: np.ndarray):
    """A windowed uint8 ``(y, x)`` slice as the ``(3, y, x)`` float32 tensor in [0, 1] the detector takes."""
    import torch

    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2D uint8 slice, got {pixels.ndim}D {pixels.dtype}")
    return torch.from_numpy(np.array(pixels, copy=True)).float().div_(255.0).expand(3, -1, -1).contiguous()
