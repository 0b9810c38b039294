"""TFDS builder "imagenet_ab": ImageNet-1k train images with their ImageNet-AB byproducts.

  import luab_jax.datasets.imagenet_ab  # registers the builder
  python -m luab_jax.prepare_data --dataset imagenet_ab/1k --manual_dir M --data_dir D \
      --num_processes 16
  src = tfds.builder("imagenet_ab/1k", data_dir=D, file_format="array_record") \
      .as_data_source("train")

Only a `train` split: evaluation on ImageNet validation uses TFDS's own `imagenet2012`.

Manual directory
----------------
Images (the first layout found, in this order):
1. an extracted tree `<wnid>/*.JPEG` under the first of `train/`, `ILSVRC/Data/CLS-LOC/train/`,
   `Data/CLS-LOC/train/` or the manual directory itself that holds `n########` folders;
2. the official `ILSVRC2012_img_train.tar` (a tar of 1000 per-class tars `<wnid>.tar`). Its
   member headers are scanned once (a few seconds: the scan seeks over the class tars) and each
   work unit then reads its own class tar in place, without extracting anything.
XMLs (the first found): the extracted trees `train_xml/<wnid>/<stem>.xml` (the release) or
`Annotations/CLS-LOC/train_enriched/<wnid>/<stem>.xml` (the official notebook's layout), else the
released `imagenet_ab_v1_0.tar.gz`. A .tar.gz cannot be read at random, so it is streamed once
into one file per class under `<data_dir>/downloads/imagenet_ab_xml_cache/` (a pickle stream of
(file name, XML bytes) in tarball order; ~the tarball's uncompressed size) which later runs reuse
while the tarball's size and mtime are unchanged. Any member path ending in `<wnid>/<file>` counts,
so a leading `train_xml/` or any other top folder is accepted; other files are skipped (counted).
Every class of the config must be present in the image layout; a missing class or a missing
layout is an error naming what was looked for.

Configs: `1k` (the 1000 ImageNet-1k classes, from the label file TFDS ships for imagenet2012, so
label i here is label i there) and `fixture` (three fake classes n00000001..3: tests). For a
subset, add an `ImagenetAbConfig` with its sorted wnids. Classes outside the config are not read.

Records
-------
Work unit = one class. Examples are written in label order, and within a class in file-name
order (`disable_shuffling`), so sequential and sharded preparation give identical files; read
with Grain's global shuffle. Keys are the file stems. Per example:
  image               JPEG bytes, shape (None, None, 3): the original file when it is a decodable
                      RGB JPEG, else repaired (below)
  label               ClassLabel over the config's sorted wnids
  file_name           e.g. "n01440764_10026.JPEG"
  clicks              float32 [N, 2] (x, y) in [0, 1]: every surviving selectedRecord of every
                      block whose `selected` text is exactly "True", in file order
  click_times_ms      float32 [N] (-1 where unreadable); click_block int32 [N] (block index)
  point, has_point    float32 [2] official mean point (x, y), (-1, -1) and False when none
  boxes               float32 [M, 4] ILSVRC boxes (x_min, y_min, x_max, y_max) normalised by the
                      XML's size; M = 0 without
  has_xml             bool: a well-formed XML was found for the image
  num_metadata        int32 number of <metadata> blocks
  selected_count      int32 sum of selectedCount over selected blocks
  estimate_time_ms    float32 mean estimateTime over selected blocks, -1 when none
  mouse_trace_length  int32 mouseTracking points over all blocks

Bad records: never fatal, each repaired or skipped and counted in the PrepareReport (reason and
example file names), once per file and reason:
- image a decodable RGB JPEG: stored byte for byte. CMYK or grayscale JPEG, PNG (or any other
  PIL-decodable format) under a .JPEG name: converted to RGB and re-encoded as JPEG quality 95
  (repaired, the reason names the format and mode). Truncated or undecodable: skipped.
- a file name without an image extension (.jpeg/.jpg/.png, any case): skipped.
- the same stem twice in a class (e.g. x.JPEG and x.jpeg, or a repeated tar member): the first in
  file-name order is kept, the others skipped. Same for a repeated XML (first in source order).
  Stems start with their wnid, so a stem cannot repeat across classes.
- no XML for an image: kept with has_xml False and no byproducts (repaired).
- malformed XML (not well-formed, or root not <annotation>): kept like a missing one (repaired).
- an XML whose image is absent: skipped.
- a class tar inside ILSVRC2012_img_train.tar that cannot be read (as a tar, or to its end): the
  rest of that class is skipped.
- XML contents: the rules of `xml_records` (`None` lists, `selected` values, NaN and out-of-range
  clicks, selected blocks without selectedRecord, unreadable numbers, ILSVRC boxes).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import tarfile
from typing import Iterator, Optional, Union

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from luab_jax.datasets import preparation
from luab_jax.datasets import stored_images
from luab_jax.datasets.imagenet_ab import xml_records

SPLIT = "train"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

IMAGE_TAR = "ILSVRC2012_img_train.tar"
IMAGE_TREES = ("train", "ILSVRC/Data/CLS-LOC/train", "Data/CLS-LOC/train", ".")
XML_TREES = ("train_xml", "Annotations/CLS-LOC/train_enriched")
XML_TARBALL = "imagenet_ab_v1_0.tar.gz"
XML_CACHE = "imagenet_ab_xml_cache"

UNDECODABLE = "image: truncated or undecodable, skipped"
NOT_AN_IMAGE = "image: file name without an image extension, skipped"
DUPLICATE_IMAGE = "image: stem seen before in its class, skipped"
NO_XML = "xml: missing, image kept without byproducts"
MALFORMED_XML = "xml: malformed, image kept without byproducts"
DUPLICATE_XML = "xml: stem seen before in its class, skipped"
NOT_AN_XML = "xml: file name without .xml extension, skipped"
XML_WITHOUT_IMAGE = "xml: no image with this stem, skipped"
XML_OUTSIDE_CLASS = "xml: tarball member outside a <wnid>/ folder, skipped"
UNREADABLE_CLASS_TAR = "image: class tar unreadable, the rest of the class skipped"
FOREIGN_IMAGE = "image: stem does not start with its folder's wnid (filed in another class), skipped"
EMPTY_CLASS = "class: its image folder or tar holds no files"
UNREADABLE_IMAGE_FILE = "image: file unreadable (dangling link, directory, permissions), skipped"
UNREADABLE_XML_FILE = "xml: file unreadable (dangling link, directory, permissions), skipped"

_WNID = re.compile(r"^n\d{8}$")
_CLASS_TAR = re.compile(r"^(?:.*/)?(n\d{8})\.tar$")
_XML_MEMBER = re.compile(r"(?:^|/)(n\d{8})/([^/]+)$")


def _imagenet_1k_wnids() -> tuple[str, ...]:
  # The label file of TFDS's imagenet2012 builder: its sorted order is imagenet2012's labels.
  path = tfds.core.tfds_path("datasets/imagenet2012/labels.txt")
  return tuple(path.read_text().split())


@dataclasses.dataclass(eq=False)
class ImagenetAbConfig(tfds.core.BuilderConfig):
  """A config is the list of classes (sorted wnids; label i is wnids[i])."""
  wnids: tuple[str, ...] = ()

  def __post_init__(self):
    bad = [w for w in self.wnids if not _WNID.match(w)]
    if not self.wnids or bad or list(self.wnids) != sorted(set(self.wnids)):
      raise ValueError(f"Config {self.name!r}: wnids must be unique, sorted n######## ids "
                       f"(bad: {bad[:5]}).")


# ---------------------------------------------------------------------------------------------
# Where one class's images and XMLs come from: small picklable descriptions, read in the worker.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """`<root>/<wnid>/` of an extracted train tree."""
  path: str

  def files(self) -> Iterator[tuple[str, bytes | None]]:
    yield from _folder_files(self.path)


def _folder_files(folder: str) -> Iterator[tuple[str, bytes | None]]:
  """(name, bytes) of each entry of `folder`; bytes None where it cannot be read (a dangling
  link, a directory, no permission), for the caller to report rather than drop."""
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      logging.warning("imagenet_ab: %s: %s", path, e)
      data = None
    yield name, data


class _FileWindow(io.RawIOBase):
  """Read-only view of bytes [start, start + size) of an open file: a tar inside a tar."""

  def __init__(self, f, start: int, size: int):
    super().__init__()
    self._f, self._start, self._size, self._pos = f, start, size, 0

  def readable(self):
    return True

  def seekable(self):
    return True

  def tell(self):
    return self._pos

  def seek(self, offset, whence=io.SEEK_SET):
    base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
    self._pos = min(max(base + offset, 0), self._size)
    return self._pos

  def readinto(self, buffer):
    n = min(len(buffer), self._size - self._pos)
    self._f.seek(self._start + self._pos)
    data = self._f.read(n)
    buffer[:len(data)] = data
    self._pos += len(data)
    return len(data)


@dataclasses.dataclass(frozen=True)
class ImageClassTar:
  """`<wnid>.tar` stored at byte `offset` (`size` bytes) inside ILSVRC2012_img_train.tar."""
  tar_path: str
  member: str
  offset: int
  size: int

  def files(self) -> Iterator[tuple[str, bytes]]:
    with open(self.tar_path, "rb") as f:
      window = _FileWindow(f, self.offset, self.size)
      with tarfile.open(fileobj=window, mode="r:") as tar:
        # Sorted (stably: a repeated member keeps its tar order) like the extracted tree.
        members = sorted((m for m in tar.getmembers() if m.isfile()),
                         key=lambda m: os.path.basename(m.name))
        for member in members:
          yield os.path.basename(member.name), tar.extractfile(member).read()


@dataclasses.dataclass(frozen=True)
class XmlFolder:
  """`<root>/<wnid>/` of an extracted XML tree; may not exist (then the class has no XML)."""
  path: str

  def files(self) -> Iterator[tuple[str, bytes | None]]:
    if os.path.isdir(self.path):
      yield from _folder_files(self.path)


@dataclasses.dataclass(frozen=True)
class XmlCacheFile:
  """One class's XMLs streamed out of imagenet_ab_v1_0.tar.gz; may not exist (no XML)."""
  path: str

  def files(self) -> Iterator[tuple[str, bytes]]:
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb") as f:
      while True:
        try:
          yield pickle.load(f)
        except EOFError:
          return


ImageSource = Union[ImageFolder, ImageClassTar]
XmlSource = Union[XmlFolder, XmlCacheFile]


@dataclasses.dataclass(frozen=True)
class ClassUnit:
  """The work unit: one class."""
  wnid: str
  label: int
  images: ImageSource
  xmls: XmlSource


# ---------------------------------------------------------------------------------------------
# Layout detection (in the parent process, once per preparation).
# ---------------------------------------------------------------------------------------------


def _has_class_folders(path: str) -> bool:
  return os.path.isdir(path) and any(
      _WNID.match(name) and os.path.isdir(os.path.join(path, name)) for name in os.listdir(path))


def _require_classes(wnids, present, where: str) -> None:
  missing = [w for w in wnids if w not in present]
  if missing:
    raise FileNotFoundError(f"{len(missing)} classes of the config are missing from {where}, "
                            f"e.g. {missing[:5]}.")


def _class_tar_index(tar_path: str) -> dict[str, tuple[str, int, int]]:
  """wnid -> (member name, data offset, size) of each class tar in the big tar."""
  index = {}
  with tarfile.open(tar_path, mode="r:") as tar:
    for member in tar:  # Reading headers only: tarfile seeks over the members' data.
      match = _CLASS_TAR.match(member.name)
      if member.isfile() and match:
        index[match.group(1)] = (member.name, member.offset_data, member.size)
  return index


def image_sources(manual_dir: str, wnids) -> dict[str, ImageSource]:
  """The images of each class, from the first image layout found under `manual_dir`."""
  for tree in IMAGE_TREES:
    root = os.path.normpath(os.path.join(manual_dir, tree))
    if _has_class_folders(root):
      _require_classes(wnids, set(os.listdir(root)), root)
      logging.info("imagenet_ab: images from the tree %s", root)
      return {w: ImageFolder(os.path.join(root, w)) for w in wnids}
  tar_path = os.path.join(manual_dir, IMAGE_TAR)
  if os.path.isfile(tar_path):
    index = _class_tar_index(tar_path)
    _require_classes(wnids, index, tar_path)
    logging.info("imagenet_ab: images from %s", tar_path)
    return {w: ImageClassTar(tar_path, *index[w]) for w in wnids}
  looked = [os.path.join(manual_dir, t, "<wnid>/") for t in IMAGE_TREES] + [tar_path]
  raise FileNotFoundError("No ImageNet train images found; looked for " + ", ".join(looked))


def _stamp(path: str) -> dict:
  stat = os.stat(path)
  return {"source": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _AppendStreams:
  """Per-class append-only files, with a bounded number open at once."""

  def __init__(self, directory: str, max_open: int = 64):
    self._directory, self._max_open, self._open = directory, max_open, {}

  def get(self, wnid: str):
    if wnid not in self._open:
      if len(self._open) >= self._max_open:
        self.close()
      self._open[wnid] = open(os.path.join(self._directory, wnid + ".pkl"), "ab")
    return self._open[wnid]

  def close(self):
    for f in self._open.values():
      f.close()
    self._open = {}


def xml_cache(tarball: str, cache_dir: str) -> tuple[str, list[str]]:
  """Streams the XML tarball once into one pickle stream per class.

  Returns the directory and the files of the tarball that are not under a <wnid>/ folder.
  """
  marker = os.path.join(cache_dir, "COMPLETE.json")
  stamp = _stamp(tarball)
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      made = json.load(f)
    if made["stamp"] == stamp:
      logging.info("imagenet_ab: reusing the XML cache %s", cache_dir)
      return cache_dir, made["ignored_members"]
    logging.info("imagenet_ab: %s changed since the XML cache was made: rebuilding", tarball)
  logging.info("imagenet_ab: streaming %s into %s (once)", tarball, cache_dir)
  building = cache_dir + ".incomplete"
  for path in (building, cache_dir):
    if os.path.exists(path):
      shutil.rmtree(path)
  os.makedirs(building)
  streams = _AppendStreams(building)
  num_xml, ignored = 0, []
  try:
    with tarfile.open(tarball, mode="r|gz") as tar:
      for member in tar:
        match = _XML_MEMBER.search(member.name)
        if not (member.isfile() and match):
          if member.isfile():
            ignored.append(member.name)
          continue
        wnid, name = match.groups()
        pickle.dump((name, tar.extractfile(member).read()), streams.get(wnid))
        num_xml += 1
  finally:
    streams.close()
  with open(os.path.join(building, "COMPLETE.json"), "w", encoding="utf-8") as f:
    json.dump({"stamp": stamp, "files": num_xml, "ignored_members": ignored}, f, indent=1)
  os.rename(building, cache_dir)
  return cache_dir, ignored


def xml_sources(manual_dir: str, wnids, cache_root: str, split: str,
                report: preparation.PrepareReport) -> dict[str, XmlSource]:
  """The XMLs of each class, from the first XML layout found under `manual_dir`."""
  for tree in XML_TREES:
    root = os.path.join(manual_dir, tree)
    if _has_class_folders(root):
      logging.info("imagenet_ab: XMLs from the tree %s", root)
      return {w: XmlFolder(os.path.join(root, w)) for w in wnids}
  tarball = os.path.join(manual_dir, XML_TARBALL)
  if os.path.isfile(tarball):
    cache, ignored = xml_cache(tarball, os.path.join(cache_root, XML_CACHE))
    for name in ignored:
      report.skip(split, XML_OUTSIDE_CLASS, f"{XML_TARBALL}:{name}")
    return {w: XmlCacheFile(os.path.join(cache, w + ".pkl")) for w in wnids}
  looked = [os.path.join(manual_dir, t, "<wnid>/") for t in XML_TREES] + [tarball]
  raise FileNotFoundError("No ImageNet-AB XMLs found; looked for " + ", ".join(looked))


# ---------------------------------------------------------------------------------------------
# One class: images checked and repaired, XMLs parsed, joined on the file stem.
# ---------------------------------------------------------------------------------------------


def _class_images(unit: ClassUnit, split: str,
                  report: preparation.PrepareReport) -> Iterator[tuple[str, bytes]]:
  count = 0
  try:
    for item in unit.images.files():
      count += 1
      yield item
  except tarfile.TarError as e:
    logging.error("imagenet_ab: %s in %s: %s", unit.images.member, unit.images.tar_path, e)
    report.skip(split, UNREADABLE_CLASS_TAR, f"{unit.images.tar_path}:{unit.images.member}")
    return
  if not count:  # A class that adds nothing must still show in the report.
    report.skip(split, EMPTY_CLASS, unit.wnid)


def _class_xmls(unit: ClassUnit, split: str,
                report: preparation.PrepareReport) -> dict[str, tuple[str, bytes]]:
  """stem -> (file name, bytes); the first XML of a stem wins."""
  xmls = {}
  for name, data in unit.xmls.files():
    stem, ext = os.path.splitext(name)
    if data is None:
      report.skip(split, UNREADABLE_XML_FILE, f"{unit.wnid}/{name}")
    elif ext.lower() != ".xml":
      report.skip(split, NOT_AN_XML, f"{unit.wnid}/{name}")
    elif stem in xmls:
      report.skip(split, DUPLICATE_XML, f"{unit.wnid}/{name}")
    else:
      xmls[stem] = (name, data)
  return xmls


def _byproducts(xml: Optional[tuple[str, bytes]], image_name: str, split: str,
                report: preparation.PrepareReport) -> dict[str, np.ndarray]:
  record = None
  if xml is None:
    report.repair(split, NO_XML, image_name)
  else:
    xml_name = f"{os.path.dirname(image_name)}/{xml[0]}"
    try:
      record = xml_records.parse(xml[1], xml_name)
    except xml_records.MalformedXmlError as e:
      logging.warning("imagenet_ab: %s", e)
      report.repair(split, MALFORMED_XML, xml_name)
    else:
      for reason in record.repairs:
        report.repair(split, reason, xml_name)
  return xml_records.byproduct_features(record)


def class_examples(unit: ClassUnit, split: str,
                   report: preparation.PrepareReport) -> Iterator[tuple[str, dict]]:
  """(stem, example) of every usable image of one class, in file-name order."""
  xmls = _class_xmls(unit, split, report)
  stems = set()
  for file_name, data in _class_images(unit, split, report):
    name = f"{unit.wnid}/{file_name}"
    stem, ext = os.path.splitext(file_name)
    if data is None:
      report.skip(split, UNREADABLE_IMAGE_FILE, name)
      continue
    if ext.lower() not in IMAGE_EXTENSIONS:
      report.skip(split, NOT_AN_IMAGE, name)
      continue
    if not stem.startswith(unit.wnid + "_"):  # Its label would be the folder's, not its own.
      report.skip(split, FOREIGN_IMAGE, name)
      continue
    if stem in stems:
      report.skip(split, DUPLICATE_IMAGE, name)
      continue
    stems.add(stem)
    try:
      image = stored_images.storable_jpeg(data)
    except stored_images.UndecodableImageError as e:
      logging.warning("imagenet_ab: %s: %s", name, e)
      report.skip(split, UNDECODABLE, name)
      continue
    if image.repair:
      report.repair(split, image.repair, name)
    example = {"image": image.data, "label": unit.label, "file_name": file_name}
    example.update(_byproducts(xmls.get(stem), name, split, report))
    yield stem, example
  for stem in sorted(xmls.keys() - stems):
    report.skip(split, XML_WITHOUT_IMAGE, f"{unit.wnid}/{xmls[stem][0]}")


# ---------------------------------------------------------------------------------------------
# The builder.
# ---------------------------------------------------------------------------------------------


class ImagenetAb(preparation.UnitBuilder):
  """ImageNet-1k train images with ImageNet-AB clicks, official mean point and summaries."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put in the manual directory (--manual_dir):
  - the ImageNet-1k train images: ILSVRC2012_img_train.tar as downloaded from image-net.org, or
    its extracted tree train/<wnid>/*.JPEG;
  - the ImageNet-AB XMLs: imagenet_ab_v1_0.tar.gz (huggingface.co/datasets/coallaoh/ImageNet-AB)
    or its extracted train_xml/<wnid>/*.xml (also accepted:
    Annotations/CLS-LOC/train_enriched/<wnid>/*.xml).
  """
  BUILDER_CONFIGS = [
      ImagenetAbConfig(name="1k", description="The 1000 ImageNet-1k classes.",
                       wnids=_imagenet_1k_wnids()),
      ImagenetAbConfig(name="fixture", description="Three fake classes of the test fixture.",
                       wnids=("n00000001", "n00000002", "n00000003")),
  ]
  DEFAULT_CONFIG_NAME = "1k"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="ImageNet-1k train images with the ImageNet-AB annotation byproducts.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(self.builder_config.wnids)),
            "file_name": tfds.features.Text(),
            "clicks": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "click_times_ms": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "click_block": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "has_point": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "has_xml": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "num_metadata": tfds.features.Tensor(shape=(), dtype=np.int32),
            "selected_count": tfds.features.Tensor(shape=(), dtype=np.int32),
            "estimate_time_ms": tfds.features.Tensor(shape=(), dtype=np.float32),
            "mouse_trace_length": tfds.features.Tensor(shape=(), dtype=np.int32),
        }),
        supervised_keys=("image", "label"),
        # Record order = label, then file name: the same whether prepared sequentially or
        # sharded over processes.
        disable_shuffling=True,
    )

  def _split_names(self):
    return (SPLIT,)

  def _work_units(self, split: str) -> list[ClassUnit]:
    wnids = self.builder_config.wnids
    images = image_sources(self.manual_dir, wnids)
    xmls = xml_sources(self.manual_dir, wnids,
                       os.path.join(os.fspath(self.data_dir_root), "downloads"), split,
                       self.prepare_report)
    return [ClassUnit(w, label, images[w], xmls[w]) for label, w in enumerate(wnids)]

  def _unit_examples(self, split: str, unit: ClassUnit,
                     report: preparation.PrepareReport) -> Iterator[tuple[str, dict]]:
    return class_examples(unit, split, report)


# The name TFDS also accepts for the builder class of a `*_dataset_builder.py` module.
Builder = ImagenetAb
