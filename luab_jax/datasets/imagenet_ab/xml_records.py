"""One ImageNet-AB XML file: parsed into an `XmlRecord`, and the official regression target.

Pure Python + numpy, no TFDS: `imagenet_ab_dataset_builder` calls `parse` once per XML and
`byproduct_features` once per image.

The file (see `shared/reference/luab.md`): an `<annotation>` that keeps the ILSVRC box fields
(`size/width,height`, `object/bndbox/xmin..ymax`) when the image had a box, then one `<metadata>`
block per annotator session. List-valued fields are repeated sibling elements
(`<selectedRecord><x/><y/><time/></selectedRecord>` ..., likewise `mouseTracking` with
time/x/y and `hoveredRecord` with action/time), or a single element whose text is `None` when
the list is empty (the format, read as an empty list, not a repair: most files have it).
Coordinates are normalised to [0, 1], x to the right, y down.

Official target (the released loader): for every block whose `selected` text is exactly "True",
take its FIRST selectedRecord's (x, y); the point is the mean over those blocks. No XML or no such
block: no point.

Awkward values are repaired by the rules below; every rule that fired is named in
`XmlRecord.repairs` (once per file, whatever the number of occurrences):
- A childless list entry other than the `None` text is ignored (EMPTY_ENTRY).
- `selected` text other than "True"/"False" (also missing): the block is not selected
  (SELECTED_NOT_BOOL), as in the official loader, which only takes "True".
- A selected block without any selectedRecord gives no point (SELECTED_WITHOUT_RECORD).
- A click (selectedRecord) with a NaN, infinite or missing coordinate is dropped (CLICK_NAN).
  A coordinate outside [0, 1] by at most CLIP_TOLERANCE is clipped (CLICK_CLIPPED): clicks on
  the image's last pixel row/column can round to just past 1. Further out, the click cannot be
  on the image and is dropped (CLICK_OUTSIDE).
- When the FIRST selectedRecord of a selected block was dropped, that block gives no point
  (FIRST_CLICK_DROPPED): the official loader never looks at a block's second record, so falling
  back to it would invent a target.
- An unreadable estimateTime / selectedCount / click time: left out of the means and sums (click
  time: -1) (BAD_NUMBER).
- ILSVRC box: normalised by the XML's size; corners outside [0, 1] by at most CLIP_TOLERANCE
  are clipped (BOX_CLIPPED); a box further out, empty, non-finite, or without a usable size is
  dropped (BOX_DROPPED).
A file that is not well-formed XML or whose root is not `<annotation>` raises `MalformedXmlError`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional
import xml.etree.ElementTree as ET

import numpy as np

CLIP_TOLERANCE = 0.01

EMPTY_ENTRY = "xml: childless list entry ignored"
SELECTED_NOT_BOOL = "xml: <selected> neither 'True' nor 'False', block treated as not selected"
SELECTED_WITHOUT_RECORD = "xml: selected block without selectedRecord gives no point"
CLICK_NAN = "xml: click with NaN or missing coordinate dropped"
CLICK_CLIPPED = f"xml: click outside [0,1] by <= {CLIP_TOLERANCE} clipped"
CLICK_OUTSIDE = f"xml: click outside [0,1] by > {CLIP_TOLERANCE} dropped"
FIRST_CLICK_DROPPED = "xml: first click of a selected block dropped, block gives no point"
BAD_NUMBER = "xml: unreadable estimateTime/selectedCount/time ignored"
BOX_CLIPPED = f"xml: ILSVRC box outside [0,1] by <= {CLIP_TOLERANCE} clipped"
BOX_DROPPED = "xml: unusable ILSVRC box dropped"

NO_POINT = (-1.0, -1.0)


class MalformedXmlError(ValueError):
  """The file is not an ImageNet-AB annotation at all (not XML, or not an `<annotation>`)."""


@dataclasses.dataclass(frozen=True)
class Click:
  x: float
  y: float
  time_ms: float  # -1 when unreadable.


@dataclasses.dataclass(frozen=True)
class MetadataBlock:
  """One annotator session's record of the image."""
  selected: bool                      # `selected` text is exactly "True".
  clicks: tuple[Click, ...]           # Its selectedRecords that survived the repairs, in order.
  first_click: Optional[Click]        # Its first selectedRecord; None if absent or dropped.
  selected_count: Optional[int]
  estimate_time_ms: Optional[float]
  mouse_trace_length: int             # mouseTracking entries.


@dataclasses.dataclass(frozen=True)
class XmlRecord:
  """What one XML says about one image, after the repairs named in `repairs`."""
  blocks: tuple[MetadataBlock, ...]
  boxes: np.ndarray                   # float32 [M, 4], (x_min, y_min, x_max, y_max) in [0, 1].
  repairs: tuple[str, ...]            # Rules that fired, each once, in order of first firing.


class _Repairs:
  """Ordered set of the rules that fired while parsing one file."""

  def __init__(self):
    self.fired: dict[str, None] = {}

  def add(self, reason: str) -> None:
    self.fired.setdefault(reason, None)


def _text(parent: ET.Element, tag: str) -> Optional[str]:
  child = parent.find(tag)
  if child is None or child.text is None:
    return None
  return child.text.strip()


def _number(parent: ET.Element, tag: str) -> Optional[float]:
  """The float in `<tag>`, or None when missing or unreadable (NaN text reads as NaN)."""
  text = _text(parent, tag)
  if text is None:
    return None
  try:
    return float(text)
  except ValueError:
    return None


def _list_entries(block: ET.Element, tag: str, repairs: _Repairs) -> list[ET.Element]:
  """The entries of a repeated field; the text `None` (an empty list) gives no entry."""
  entries = []
  for element in block.findall(tag):
    if len(element):
      entries.append(element)
    elif (element.text or "").strip() != "None":
      repairs.add(EMPTY_ENTRY)
  return entries


def _coordinate(value: Optional[float], repairs: _Repairs) -> Optional[float]:
  """A coordinate in [0, 1] after the clip rule, or None when the click must be dropped."""
  if value is None or not math.isfinite(value):
    repairs.add(CLICK_NAN)
    return None
  if 0.0 <= value <= 1.0:
    return value
  if -CLIP_TOLERANCE <= value <= 1.0 + CLIP_TOLERANCE:
    repairs.add(CLICK_CLIPPED)
    return min(max(value, 0.0), 1.0)
  repairs.add(CLICK_OUTSIDE)
  return None


def _click(entry: ET.Element, repairs: _Repairs) -> Optional[Click]:
  x = _coordinate(_number(entry, "x"), repairs)
  y = _coordinate(_number(entry, "y"), repairs)
  if x is None or y is None:
    return None
  time_ms = _number(entry, "time")
  if time_ms is None or not math.isfinite(time_ms):
    repairs.add(BAD_NUMBER)
    time_ms = -1.0
  return Click(x, y, time_ms)


def _selected(block: ET.Element, repairs: _Repairs) -> bool:
  element = block.find("selected")
  text = element.text if element is not None else None  # Not stripped: the text must be exact.
  if text not in ("True", "False"):
    repairs.add(SELECTED_NOT_BOOL)
  return text == "True"


def _parse_block(block: ET.Element, repairs: _Repairs) -> MetadataBlock:
  selected = _selected(block, repairs)
  entries = _list_entries(block, "selectedRecord", repairs)
  clicks = [_click(entry, repairs) for entry in entries]
  first_click = clicks[0] if clicks else None
  if selected and not entries:
    repairs.add(SELECTED_WITHOUT_RECORD)
  elif selected and first_click is None:
    repairs.add(FIRST_CLICK_DROPPED)
  _list_entries(block, "hoveredRecord", repairs)  # Only its `None` text is checked.
  estimate_time = _number(block, "estimateTime")
  selected_count = _number(block, "selectedCount")
  if selected and (estimate_time is None or not math.isfinite(estimate_time)
                   or selected_count is None or not math.isfinite(selected_count)):
    repairs.add(BAD_NUMBER)
  return MetadataBlock(
      selected=selected,
      clicks=tuple(c for c in clicks if c is not None),
      first_click=first_click,
      selected_count=(int(selected_count) if selected_count is not None
                      and math.isfinite(selected_count) else None),
      estimate_time_ms=(estimate_time if estimate_time is not None
                        and math.isfinite(estimate_time) else None),
      mouse_trace_length=len(_list_entries(block, "mouseTracking", repairs)))


def _parse_boxes(root: ET.Element, repairs: _Repairs) -> np.ndarray:
  """ILSVRC boxes normalised by the XML's own size; float32 [M, 4]."""
  objects = [obj.find("bndbox") for obj in root.findall("object")]
  objects = [b for b in objects if b is not None]
  size = root.find("size")
  width = _number(size, "width") if size is not None else None
  height = _number(size, "height") if size is not None else None
  boxes = []
  for bndbox in objects:
    corners = [_number(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax")]
    if (not width or not height or not math.isfinite(width) or not math.isfinite(height)
        or any(c is None or not math.isfinite(c) for c in corners)):
      repairs.add(BOX_DROPPED)
      continue
    box = np.array(corners, np.float64) / [width, height, width, height]
    if np.any(box < -CLIP_TOLERANCE) or np.any(box > 1.0 + CLIP_TOLERANCE):
      repairs.add(BOX_DROPPED)
      continue
    if np.any(box < 0.0) or np.any(box > 1.0):
      repairs.add(BOX_CLIPPED)
      box = np.clip(box, 0.0, 1.0)
    if box[2] <= box[0] or box[3] <= box[1]:
      repairs.add(BOX_DROPPED)
      continue
    boxes.append(box)
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def parse(data: bytes, name: str) -> XmlRecord:
  """Parses one ImageNet-AB XML file (`name` is only used in errors)."""
  try:
    root = ET.fromstring(data)
  except ET.ParseError as e:
    raise MalformedXmlError(f"{name}: not well-formed XML ({e}).") from e
  if root.tag != "annotation":
    raise MalformedXmlError(f"{name}: root element is <{root.tag}>, expected <annotation>.")
  repairs = _Repairs()
  blocks = tuple(_parse_block(block, repairs) for block in root.findall("metadata"))
  boxes = _parse_boxes(root, repairs)
  return XmlRecord(blocks=blocks, boxes=boxes, repairs=tuple(repairs.fired))


def official_point(record: XmlRecord) -> Optional[np.ndarray]:
  """Mean over selected blocks of their first click: float32 [2] (x, y), or None."""
  firsts = [(b.first_click.x, b.first_click.y) for b in record.blocks
            if b.selected and b.first_click is not None]
  if not firsts:
    return None
  return np.mean(np.asarray(firsts, np.float64), axis=0).astype(np.float32)


def byproduct_features(record: Optional[XmlRecord]) -> dict[str, np.ndarray]:
  """Every byproduct feature of the `imagenet_ab` builder; `record` None means no usable XML."""
  blocks = record.blocks if record is not None else ()
  selected = [b for b in blocks if b.selected]
  clicks = [(i, c) for i, b in enumerate(blocks) if b.selected for c in b.clicks]
  point = official_point(record) if record is not None else None
  times = [b.estimate_time_ms for b in selected if b.estimate_time_ms is not None]
  return {
      "clicks": np.asarray([(c.x, c.y) for _, c in clicks], np.float32).reshape(-1, 2),
      "click_times_ms": np.asarray([c.time_ms for _, c in clicks], np.float32),
      "click_block": np.asarray([i for i, _ in clicks], np.int32),
      "point": point if point is not None else np.asarray(NO_POINT, np.float32),
      "has_point": np.bool_(point is not None),
      "boxes": record.boxes if record is not None else np.zeros((0, 4), np.float32),
      "has_xml": np.bool_(record is not None),
      "num_metadata": np.int32(len(blocks)),
      "selected_count": np.int32(sum(b.selected_count or 0 for b in selected)),
      "estimate_time_ms": np.float32(np.mean(times) if times else -1.0),
      "mouse_trace_length": np.int32(sum(b.mouse_trace_length for b in blocks)),
  }
