"""Tests of ImageNet-AB: XML parsing and the official target, and the builder on the fixture.

The fixture (tests/fixtures/imagenet_ab/README.md) is itself a manual directory (train/ holds
links to ../photos, train_xml/ the XMLs); `make_manual_dir` lays it out in the other supported
layouts. The builds go through `core.prepare`, sequential and sharded.
"""

import io
import pathlib
import shutil
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from luab_jax.datasets import core
from luab_jax.datasets import preparation
from luab_jax.datasets import stored_images
from luab_jax.datasets.imagenet_ab import imagenet_ab_dataset_builder as iab
from luab_jax.datasets.imagenet_ab import xml_records as xr

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MANUAL_DIR = FIXTURES / "imagenet_ab"
XML_TREE = MANUAL_DIR / "train_xml"
PHOTOS = FIXTURES / "photos"
CONFIG = "imagenet_ab/fixture"
WNIDS = ("n00000001", "n00000002", "n00000003")

# wnid -> image file name -> the photograph it links to.
IMAGES = {wnid.name: {image.name: image.resolve() for image in sorted(wnid.iterdir())}
          for wnid in sorted((MANUAL_DIR / "train").iterdir())}
WRITTEN = ["n00000001_1.JPEG", "n00000001_2.JPEG", "n00000001_3.JPEG", "n00000001_4.JPEG",
           "n00000002_1.JPEG", "n00000002_2.JPEG", "n00000002_4.JPEG",
           "n00000003_1.JPEG", "n00000003_2.JPEG", "n00000003_3.JPEG"]
# The XML member the tarball layout repeats (with other content): the first must win.
DUPLICATED_XML = "n00000001/n00000001_1.xml"
STRAY_XML = "train_xml/n00000001_5.xml"  # In the tarball, outside any class folder.


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def make_manual_dir(root, *, images="tree", xmls="train_xml") -> str:
  """A manual directory holding the fixture in one image and one XML layout.

  images: "tree" (train/<wnid>/*.JPEG) or "tar" (ILSVRC2012_img_train.tar of <wnid>.tar).
  xmls: "train_xml", "enriched" (Annotations/CLS-LOC/train_enriched) or "tarball"
  (imagenet_ab_v1_0.tar.gz, with DUPLICATED_XML repeated and STRAY_XML added).
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True)
  if images == "tree":
    for wnid, files in IMAGES.items():
      (root / "train" / wnid).mkdir(parents=True)
      for name, photo in files.items():
        shutil.copyfile(photo, root / "train" / wnid / name)
  else:
    with tarfile.open(root / iab.IMAGE_TAR, "w") as outer:
      for wnid, files in IMAGES.items():
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tar:
          for name, photo in files.items():
            tar.add(photo, arcname=name)
        _tar_add_bytes(outer, f"{wnid}.tar", inner.getvalue())
  if xmls == "train_xml":
    shutil.copytree(XML_TREE, root / "train_xml")
  elif xmls == "enriched":
    shutil.copytree(XML_TREE, root / "Annotations" / "CLS-LOC" / "train_enriched")
  else:
    with tarfile.open(root / iab.XML_TARBALL, "w:gz") as tar:
      for path in sorted(XML_TREE.glob("*/*.xml")):
        tar.add(path, arcname=f"train_xml/{path.parent.name}/{path.name}")
      _tar_add_bytes(tar, f"train_xml/{DUPLICATED_XML}", b"<annotation></annotation>")
      _tar_add_bytes(tar, STRAY_XML, b"<annotation></annotation>")
  return str(root)


def _prepare(tmp_path_factory, num_processes=1, **layout):
  """Prepares the fixture laid out as `layout`; without one, from the committed fixture."""
  root = tmp_path_factory.mktemp("imagenet_ab")
  manual_dir = make_manual_dir(root / "manual", **layout) if layout else str(MANUAL_DIR)
  data_dir = str(root / "tfds")
  builder = core.prepare(CONFIG, data_dir, manual_dir=manual_dir, num_processes=num_processes)
  return data_dir, builder


def _records(data_dir):
  """The train split read back as TFDS users read it, with the image left as JPEG bytes."""
  source = tfds.builder(CONFIG, data_dir=data_dir, file_format="array_record").as_data_source(
      "train", decoders={"image": tfds.decode.SkipDecoding()})
  return [source[i] for i in range(len(source))]


def _report(builder):
  return preparation.read_report(builder.data_dir).to_json()


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
  data_dir, builder = _prepare(tmp_path_factory)
  return _records(data_dir), _report(builder), builder


# ---------------------------------------------------------------------------------------------
# xml_records: official semantics and every awkward case.
# ---------------------------------------------------------------------------------------------


def _fixture_xml(stem):
  path = XML_TREE / stem.split("_")[0] / f"{stem}.xml"
  return xr.parse(path.read_bytes(), path.name)


def _block(selected="True", records=((0.5, 0.5, 100),), extra=""):
  rows = "".join(f"<selectedRecord><x>{x}</x><y>{y}</y><time>{t}</time></selectedRecord>"
                 for x, y, t in records) or "<selectedRecord>None</selectedRecord>"
  selected = f"<selected>{selected}</selected>" if selected is not None else ""
  return (f"<metadata><estimateTime>1000</estimateTime><hoveredRecord>None</hoveredRecord>"
          f"<mouseTracking>None</mouseTracking>{selected}<selectedCount>1</selectedCount>"
          f"{rows}{extra}</metadata>")


def _parse(*blocks, head=""):
  return xr.parse(f"<annotation>{head}{''.join(blocks)}</annotation>".encode(), "inline.xml")


def test_one_selected_block_and_a_false_one():
  record = _fixture_xml("n00000001_1")
  features = xr.byproduct_features(record)
  np.testing.assert_allclose(features["point"], [0.5212, 0.4409], rtol=1e-6)
  assert features["has_point"] and features["has_xml"]
  np.testing.assert_allclose(features["clicks"], [[0.5212, 0.4409]], rtol=1e-6)
  np.testing.assert_array_equal(features["click_block"], [0])
  np.testing.assert_array_equal(features["click_times_ms"], [6954])
  np.testing.assert_allclose(features["boxes"], [[40 / 160, 10 / 160, 130 / 160, 1.0]])
  assert features["num_metadata"] == 2 and features["selected_count"] == 1
  assert features["estimate_time_ms"] == 1834 and features["mouse_trace_length"] == 4
  assert record.repairs == ()  # Its other block's hoveredRecord is `None`: the format.


def test_a_childless_list_entry_other_than_none_is_a_repair():
  assert _parse(_block()).repairs == ()  # `None` lists only.
  record = _parse(_block(extra="<mouseTracking></mouseTracking>"))
  assert record.repairs == (xr.EMPTY_ENTRY,)
  assert xr.byproduct_features(record)["mouse_trace_length"] == 0


def test_point_is_mean_over_selected_blocks_of_their_first_record():
  features = xr.byproduct_features(_fixture_xml("n00000001_2"))
  np.testing.assert_allclose(features["point"], [0.40, 0.50], rtol=1e-6)
  np.testing.assert_allclose(features["clicks"], [[0.30, 0.40], [0.35, 0.45], [0.50, 0.60]])
  np.testing.assert_array_equal(features["click_block"], [0, 0, 1])
  assert features["selected_count"] == 3 and features["estimate_time_ms"] == 2000


def test_false_text_is_not_selected_even_with_records():
  # bool("False") is True in Python: only the text "True" selects a block.
  record = _parse(_block("False", [(0.9, 0.9, 1)]), _block("True", [(0.1, 0.3, 2)]))
  features = xr.byproduct_features(record)
  np.testing.assert_allclose(features["point"], [0.1, 0.3], rtol=1e-6)
  np.testing.assert_array_equal(features["click_block"], [1])
  assert xr.SELECTED_NOT_BOOL not in record.repairs


@pytest.mark.parametrize("text", ["true", " True", "1", "", None])
def test_weird_selected_values_are_not_selected(text):
  record = _parse(_block(text, [(0.9, 0.9, 1)]))
  assert xr.official_point(record) is None
  assert xr.SELECTED_NOT_BOOL in record.repairs


def test_weird_selected_block_beside_a_selected_one():
  record = _fixture_xml("n00000001_3")
  assert xr.SELECTED_NOT_BOOL in record.repairs
  features = xr.byproduct_features(record)
  np.testing.assert_allclose(features["point"], [0.25, 0.75], rtol=1e-6)
  np.testing.assert_array_equal(features["click_block"], [1])


def test_none_texts_are_empty_lists():
  # The format of an empty list, which most files have: not a repair, or the preparation
  # report's repair counts would say ~1.28M and hide the real repairs.
  record = _fixture_xml("n00000002_1")
  assert record.repairs == ()
  features = xr.byproduct_features(record)
  assert features["mouse_trace_length"] == 0
  np.testing.assert_allclose(features["point"], [0.6, 0.2], rtol=1e-6)


def test_nan_first_click_drops_the_click_and_the_block_point():
  record = _fixture_xml("n00000002_2")
  assert record.repairs == (xr.CLICK_NAN, xr.FIRST_CLICK_DROPPED)
  features = xr.byproduct_features(record)
  # Block 0's first record is NaN: the block gives no point, its valid second click stays.
  np.testing.assert_allclose(features["point"], [0.7, 0.3], rtol=1e-6)
  np.testing.assert_allclose(features["clicks"], [[0.1, 0.1], [0.7, 0.3]], rtol=1e-6)
  np.testing.assert_array_equal(features["click_block"], [0, 1])


def test_out_of_range_clicks_clipped_within_tolerance_else_dropped():
  record = _fixture_xml("n00000003_1")
  assert set(record.repairs) == {xr.CLICK_CLIPPED, xr.CLICK_OUTSIDE, xr.FIRST_CLICK_DROPPED}
  features = xr.byproduct_features(record)
  np.testing.assert_allclose(features["point"], [1.0, 0.5])
  np.testing.assert_allclose(features["clicks"], [[1.0, 0.5]])
  assert features["estimate_time_ms"] == 2000  # Both blocks are selected.
  record = _parse(_block("True", [(-0.005, 0.5, 1), (0.5, -0.2, 2), ("inf", 0.5, 3)]))
  np.testing.assert_allclose(xr.byproduct_features(record)["clicks"], [[0.0, 0.5]])
  assert set(record.repairs) >= {xr.CLICK_CLIPPED, xr.CLICK_OUTSIDE, xr.CLICK_NAN}


def test_selected_block_without_record_gives_no_point():
  record = _fixture_xml("n00000003_2")
  assert xr.SELECTED_WITHOUT_RECORD in record.repairs
  features = xr.byproduct_features(record)
  assert features["has_xml"] and not features["has_point"]
  np.testing.assert_array_equal(features["point"], [-1, -1])
  assert features["clicks"].shape == (0, 2) and features["selected_count"] == 1


def test_boxes_normalised_clipped_or_dropped():
  record = _fixture_xml("n00000003_3")
  assert record.repairs == (xr.BOX_CLIPPED,)
  np.testing.assert_allclose(record.boxes, [[0.1, 0.2, 0.5, 0.6], [0.625, 0.125, 1.0, 0.9375]])
  box = "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
  no_size = _parse(_block(), head=box)
  assert no_size.boxes.shape == (0, 4) and xr.BOX_DROPPED in no_size.repairs
  far = _parse(_block(), head="<size><width>4</width><height>4</height></size>" + box)
  assert far.boxes.shape == (0, 4) and xr.BOX_DROPPED in far.repairs


def test_unreadable_numbers_are_left_out():
  record = _parse(_block("True", [(0.5, 0.5, "soon")]).replace(
      "<estimateTime>1000</estimateTime>", "<estimateTime>NaN</estimateTime>"))
  features = xr.byproduct_features(record)
  assert xr.BAD_NUMBER in record.repairs
  np.testing.assert_array_equal(features["click_times_ms"], [-1])
  assert features["estimate_time_ms"] == -1 and features["has_point"]


def test_malformed_xml_raises_with_the_file_name():
  path = XML_TREE / "n00000002" / "n00000002_4.xml"
  with pytest.raises(xr.MalformedXmlError, match="n00000002_4.xml"):
    xr.parse(path.read_bytes(), path.name)
  with pytest.raises(xr.MalformedXmlError, match="expected <annotation>"):
    xr.parse(b"<html></html>", "x.xml")


def test_no_xml_features():
  features = xr.byproduct_features(None)
  assert not features["has_xml"] and not features["has_point"]
  np.testing.assert_array_equal(features["point"], [-1, -1])
  assert features["clicks"].shape == (0, 2) and features["boxes"].shape == (0, 4)
  assert features["num_metadata"] == 0 and features["estimate_time_ms"] == -1


# ---------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------


def test_rgb_jpeg_kept_byte_for_byte_others_repaired_truncated_rejected():
  data = (PHOTOS / "astronaut.jpg").read_bytes()
  stored = stored_images.storable_jpeg(data)
  assert stored.data is data and stored.repair is None
  for photo, kind in (("coffee_cmyk.jpg", "JPEG CMYK"), ("camera_grayscale.jpg", "JPEG L"),
                      ("chelsea_png_named.JPEG", "PNG RGB")):
    stored = stored_images.storable_jpeg((PHOTOS / photo).read_bytes())
    assert stored.repair.startswith(f"image: {kind} re-encoded")
    with Image.open(io.BytesIO(stored.data)) as image:
      assert image.format == "JPEG" and image.mode == "RGB"
  with pytest.raises(stored_images.UndecodableImageError):
    stored_images.storable_jpeg((PHOTOS / "astronaut_truncated.jpg").read_bytes())


# ---------------------------------------------------------------------------------------------
# Layouts.
# ---------------------------------------------------------------------------------------------


def test_missing_layouts_name_what_was_looked_for(tmp_path):
  with pytest.raises(FileNotFoundError, match=iab.IMAGE_TAR):
    iab.image_sources(str(tmp_path), WNIDS)
  with pytest.raises(FileNotFoundError, match="train_enriched"):
    iab.xml_sources(str(tmp_path), WNIDS, str(tmp_path), "train", preparation.PrepareReport())
  (tmp_path / "train" / "n00000001").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="2 classes .*n00000002"):
    iab.image_sources(str(tmp_path), WNIDS)


def test_unreadable_class_tar_is_reported(tmp_path):
  path = tmp_path / iab.IMAGE_TAR
  with tarfile.open(path, "w") as outer:
    _tar_add_bytes(outer, "n00000001.tar", b"not a tar at all" * 64)
  index = iab._class_tar_index(str(path))
  unit = iab.ClassUnit("n00000001", 0, iab.ImageClassTar(str(path), *index["n00000001"]),
                       iab.XmlFolder(str(tmp_path / "none")))
  report = preparation.PrepareReport()
  assert not list(iab.class_examples(unit, "train", report))
  assert report.skipped == {f"train:{iab.UNREADABLE_CLASS_TAR}": 1}


def test_unreadable_files_in_folders_are_reported_not_dropped(tmp_path):
  """A dangling link or a directory where an image or XML should be: skipped and counted."""
  images, xmls = tmp_path / "train" / "n00000001", tmp_path / "xml" / "n00000001"
  images.mkdir(parents=True)
  xmls.mkdir(parents=True)
  with Image.new("RGB", (8, 8)) as image:
    image.save(images / "n00000001_1.JPEG")
  (images / "n00000001_2.JPEG").symlink_to(tmp_path / "gone.JPEG")
  (images / "n00000001_3.JPEG").mkdir()
  (xmls / "n00000001_4.xml").symlink_to(tmp_path / "gone.xml")
  unit = iab.ClassUnit("n00000001", 0, iab.ImageFolder(str(images)), iab.XmlFolder(str(xmls)))
  report = preparation.PrepareReport()
  assert [stem for stem, _ in iab.class_examples(unit, "train", report)] == ["n00000001_1"]
  assert report.skipped == {f"train:{iab.UNREADABLE_IMAGE_FILE}": 2,
                            f"train:{iab.UNREADABLE_XML_FILE}": 1}


def test_xml_tarball_is_cached_once(tmp_path):
  manual_dir = make_manual_dir(tmp_path / "manual", xmls="tarball")
  for attempt in range(2):  # Made, then reused; the stray member is reported both times.
    report = preparation.PrepareReport()
    sources = iab.xml_sources(manual_dir, WNIDS, str(tmp_path / "cache"), "train", report)
    names = [name for name, _ in sources["n00000001"].files()]
    assert names == ["n00000001_1.xml", "n00000001_2.xml", "n00000001_3.xml",
                     "n00000001_99.xml", "n00000001_1.xml"]
    assert report.examples == {
        f"skipped:train:{iab.XML_OUTSIDE_CLASS}": [f"{iab.XML_TARBALL}:{STRAY_XML}"]}
    marker = tmp_path / "cache" / iab.XML_CACHE / "COMPLETE.json"
    if attempt == 0:
      made = marker.stat().st_mtime_ns
  assert marker.stat().st_mtime_ns == made


# ---------------------------------------------------------------------------------------------
# Full builds through the real builder.
# ---------------------------------------------------------------------------------------------


def _by_name(records):
  return {r["file_name"].decode(): r for r in records}


def test_build_records(sequential):
  records, _, builder = sequential
  assert [r["file_name"].decode() for r in records] == WRITTEN
  assert builder.info.features["label"].names == list(WNIDS)
  assert builder.info.splits["train"].num_examples == len(WRITTEN)
  by_name = _by_name(records)
  for name, r in by_name.items():
    assert r["label"] == WNIDS.index(name[:9]), name
  expected_points = {
      "n00000001_1.JPEG": (0.5212, 0.4409), "n00000001_2.JPEG": (0.40, 0.50),
      "n00000001_3.JPEG": (0.25, 0.75), "n00000002_1.JPEG": (0.6, 0.2),
      "n00000002_2.JPEG": (0.7, 0.3), "n00000003_1.JPEG": (1.0, 0.5),
      "n00000003_3.JPEG": (0.3, 0.4)}
  for name, r in by_name.items():
    assert r["has_point"] == (name in expected_points), name
    np.testing.assert_allclose(r["point"], expected_points.get(name, (-1, -1)), rtol=1e-6,
                               err_msg=name)
  no_xml = {"n00000001_4.JPEG", "n00000002_4.JPEG"}  # Missing and malformed.
  assert {n for n, r in by_name.items() if not r["has_xml"]} == no_xml
  for name in no_xml:
    r = by_name[name]
    assert r["clicks"].shape == (0, 2) and r["num_metadata"] == 0 and r["selected_count"] == 0
  assert by_name["n00000001_1.JPEG"]["boxes"].shape == (1, 4)
  assert by_name["n00000003_3.JPEG"]["boxes"].shape == (2, 4)
  assert by_name["n00000001_2.JPEG"]["boxes"].shape == (0, 4)
  np.testing.assert_array_equal(by_name["n00000001_2.JPEG"]["click_block"], [0, 0, 1])
  assert by_name["n00000001_2.JPEG"]["clicks"].dtype == np.float32
  assert by_name["n00000001_2.JPEG"]["click_block"].dtype == np.int32


def test_build_images_are_jpeg_bytes_original_when_possible(sequential):
  records, _, _ = sequential
  photos = {name: path for files in IMAGES.values() for name, path in files.items()}
  repaired = {"n00000001_3.JPEG", "n00000002_1.JPEG", "n00000002_2.JPEG"}
  for r in records:
    name = r["file_name"].decode()
    data = r["image"]
    assert isinstance(data, bytes), name
    if name not in repaired:  # TFDS stores the given bytes unchanged.
      assert data == photos[name].read_bytes(), name
    with Image.open(io.BytesIO(data)) as image:
      assert image.format == "JPEG" and image.mode == "RGB", name
      with Image.open(photos[name]) as original:
        assert image.size == original.size, name


def test_build_report(sequential):
  _, report, _ = sequential
  assert report["written"] == {"train": len(WRITTEN)}
  names = {key.split(":", 2)[2]: value for key, value in report["examples"].items()}
  expected = {
      iab.UNDECODABLE: ["n00000002/n00000002_3.JPEG"],
      iab.DUPLICATE_IMAGE: ["n00000003/n00000003_3.jpg"],
      iab.XML_WITHOUT_IMAGE: ["n00000001/n00000001_99.xml"],
      "image: JPEG CMYK re-encoded as RGB JPEG q95": ["n00000001/n00000001_3.JPEG"],
      "image: JPEG L re-encoded as RGB JPEG q95": ["n00000002/n00000002_1.JPEG"],
      "image: PNG RGB re-encoded as RGB JPEG q95": ["n00000002/n00000002_2.JPEG"],
      iab.NO_XML: ["n00000001/n00000001_4.JPEG"],
      iab.MALFORMED_XML: ["n00000002/n00000002_4.xml"],
      xr.SELECTED_NOT_BOOL: ["n00000001/n00000001_3.xml"],
      xr.CLICK_NAN: ["n00000002/n00000002_2.xml"],
      xr.FIRST_CLICK_DROPPED: ["n00000002/n00000002_2.xml", "n00000003/n00000003_1.xml"],
      xr.CLICK_CLIPPED: ["n00000003/n00000003_1.xml"],
      xr.CLICK_OUTSIDE: ["n00000003/n00000003_1.xml"],
      xr.SELECTED_WITHOUT_RECORD: ["n00000003/n00000003_2.xml"],
      xr.BOX_CLIPPED: ["n00000003/n00000003_3.xml"],
  }
  assert names == expected
  counts = {key.split(":", 1)[1]: n for key, n in {**report["skipped"],
                                                   **report["repaired"]}.items()}
  assert counts == {reason: len(files) for reason, files in expected.items()}
  assert set(report["skipped"]) == {f"train:{r}" for r in (
      iab.UNDECODABLE, iab.DUPLICATE_IMAGE, iab.XML_WITHOUT_IMAGE)}


def _assert_same_records(a, b):
  assert len(a) == len(b)
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for key in ra:
      np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"{ra['file_name']} {key}")


def test_sharded_build_equals_sequential(sequential, tmp_path_factory):
  # The sharded build also reads copied images and the XMLs from the train_enriched layout.
  records, report, _ = sequential
  data_dir, builder = _prepare(tmp_path_factory, num_processes=2, images="tree", xmls="enriched")
  _assert_same_records(_records(data_dir), records)
  assert _report(builder) == report
  info = tfds.builder(CONFIG, data_dir=data_dir, file_format="array_record").info
  assert info.splits["train"].shard_lengths == [4, 3, 3]
  shards = sorted(p.name for p in pathlib.Path(builder.data_dir).glob("*.array_record-*"))
  assert shards == [f"imagenet_ab-train.array_record-0000{i}-of-00003" for i in range(3)]


def test_tar_layouts_equal_tree_layouts(sequential, tmp_path_factory):
  records, report, _ = sequential
  data_dir, builder = _prepare(tmp_path_factory, images="tar", xmls="tarball")
  _assert_same_records(_records(data_dir), records)
  tar_report = _report(builder)
  for reason, name in ((iab.DUPLICATE_XML, DUPLICATED_XML),
                       (iab.XML_OUTSIDE_CLASS, f"{iab.XML_TARBALL}:{STRAY_XML}")):
    assert tar_report["skipped"].pop(f"train:{reason}") == 1
    assert tar_report["examples"].pop(f"skipped:train:{reason}") == [name]
  assert tar_report == report


def test_hiding_accelerators_from_tensorflow_needs_no_tensorflow(monkeypatch):
  # Reading prepared ArrayRecord data needs TFDS only (the GPU benchmarks ran without
  # TensorFlow); the entry points call this first, so it must not import TensorFlow there.
  import importlib.util  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *args: None if name == "tensorflow" else find_spec(name, *args))
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # Any `import tensorflow` now fails.
  core.hide_accelerators_from_tensorflow()


def test_images_of_another_class_and_empty_classes_are_reported(tmp_path):
  """An image filed under another wnid would train with the folder's label: skipped, counted;
  a class folder without files is named in the report."""
  images, empty = tmp_path / "train" / "n00000001", tmp_path / "train" / "n00000002"
  images.mkdir(parents=True)
  empty.mkdir()
  for stem in ("n00000001_1", "n00000002_7"):
    with Image.new("RGB", (8, 8)) as image:
      image.save(images / f"{stem}.JPEG")
  report = preparation.PrepareReport()
  unit = iab.ClassUnit("n00000001", 0, iab.ImageFolder(str(images)),
                       iab.XmlFolder(str(tmp_path / "none")))
  assert [stem for stem, _ in iab.class_examples(unit, "train", report)] == ["n00000001_1"]
  unit = iab.ClassUnit("n00000002", 1, iab.ImageFolder(str(empty)),
                       iab.XmlFolder(str(tmp_path / "none")))
  assert not list(iab.class_examples(unit, "train", report))
  assert report.skipped == {f"train:{iab.FOREIGN_IMAGE}": 1, f"train:{iab.EMPTY_CLASS}": 1}


def test_slices_of_the_class_ordered_train_split_sample_every_class(sequential):
  """Records are stored class by class: TFDS's train[99%:] (the configs' minival) was the last
  classes only, never trained on by train[:99%]. Slices are taken over a fixed permutation."""
  data_dir = str(pathlib.Path(sequential[2].data_dir).parents[2])
  labels = [int(record["label"]) for record in sequential[0]]
  assert labels == sorted(labels)  # Stored in class order.
  head = core.get_source(CONFIG, "train[:60%]", data_dir, features=("label", "file_name"))
  tail = core.get_source(CONFIG, "train[60%:]", data_dir, features=("label", "file_name"))
  names = [head[i]["file_name"] for i in range(len(head))] + [
      tail[i]["file_name"] for i in range(len(tail))]
  assert sorted(names) == sorted(record["file_name"] for record in sequential[0])  # A partition.
  # Not the last classes only: the first class too (a random sample of 4 of 10 records).
  assert labels[0] in {tail[i]["label"] for i in range(len(tail))}
  # The whole split is read as stored.
  whole = core.get_source(CONFIG, "train", data_dir, features=("label",))
  assert [int(whole[i]["label"]) for i in range(len(whole))] == labels


def test_preparing_again_names_what_it_does_not_do(sequential, caplog):
  """A prepared dataset is reused: a new --manual_dir is not read, and the directory a killed
  preparation left (TFDS never removes it; a sharded one holds up to the whole dataset) is
  named with its size, both as warnings."""
  data_dir = pathlib.Path(sequential[2].data_dir)
  leftover = data_dir.parent / "incomplete.abc123_1.0.0"
  (leftover / "units.tmp").mkdir(parents=True)
  (leftover / "units.tmp" / "train-000000").write_bytes(b"x" * 2 ** 20)
  try:
    with caplog.at_level("WARNING"):
      core.prepare(CONFIG, str(data_dir.parents[2]), manual_dir="/elsewhere")
  finally:
    shutil.rmtree(leftover)
  assert (f"{CONFIG} is already prepared in {data_dir}: --manual_dir /elsewhere is not read "
          "(delete that directory to prepare it again).") in caplog.messages
  assert (f"{leftover} (1.0 MB) was left by an interrupted preparation; delete it unless a "
          "preparation is running now.") in caplog.messages
