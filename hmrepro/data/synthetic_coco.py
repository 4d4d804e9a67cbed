"""COCO-style annotation records for the synthetic benchmark.

The 80 COCO categories keep their real ids (1..90 with gaps); the contiguous class index used by the masks
and split lists is the position in ascending id order. Objects become polygon annotations; a crowd becomes
one ``iscrowd=1`` annotation stored as an uncompressed RLE, as COCO stores crowds.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from .synthetic_shapes import SceneObject, polygon_rle, uncompressed_rle

COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
)


def category_id(class_index: int) -> int:
    """COCO category id of contiguous class ``class_index`` (0..79)."""
    return COCO_CATEGORIES[class_index][0]


def categories_json() -> list[dict]:
    return [{"id": cid, "name": name, "supercategory": "synthetic"} for cid, name in COCO_CATEGORIES]


def image_json(image_id: int, file_name: str, height: int, width: int) -> dict:
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def _box_and_area(rle: dict) -> tuple[list[float], float]:
    box = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    return box, float(mask_utils.area(rle))


def object_annotation(ann_id: int, image_id: int, obj: SceneObject, height: int, width: int) -> dict:
    """A non-crowd polygon annotation of ``obj`` (one polygon)."""
    box, area = _box_and_area(polygon_rle(obj.polygon, height, width))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id(obj.class_index),
        "segmentation": [obj.polygon.ravel().tolist()],
        "area": area,
        "bbox": box,
        "iscrowd": 0,
    }


def crowd_annotation(ann_id: int, image_id: int, class_index: int, mask: np.ndarray) -> dict:
    """An ``iscrowd=1`` annotation covering ``mask``, stored as an uncompressed RLE."""
    segmentation = uncompressed_rle(mask)
    height, width = segmentation["size"]
    box, area = _box_and_area(mask_utils.frPyObjects(segmentation, height, width))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id(class_index),
        "segmentation": segmentation,
        "area": area,
        "bbox": box,
        "iscrowd": 1,
    }
