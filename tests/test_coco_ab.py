"""Tests of COCO-AB: the official target semantics, bad records, and the real builder's output.

The fixture (tests/fixtures/coco_ab, see its README) is a manual directory: instances and COCO-AB
JSONs in the published schemas, and train2014/ and val2014/ holding links to the committed
photos under COCO file names.
"""

import io
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from luab_jax.datasets import preparation
from luab_jax.datasets import stored_images
from luab_jax.datasets.coco_ab import coco_ab_dataset_builder as cab
from luab_jax.datasets.coco_ab import coco_records as cr

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
COCO_FIXTURE = os.path.join(FIXTURES, "coco_ab")
PHOTOS = os.path.join(FIXTURES, "photos")
K = {name: k for k, name in enumerate(cr.CLASS_NAMES)}


def _file_name(coco_split, image_id):
  return f"COCO_{coco_split}_{image_id:012d}.jpg"


def _load(name):
  with open(os.path.join(COCO_FIXTURE, name), "rb") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def train_images():
  images, _ = cr.parse_instances(_load("annotations/instances_train2014.json"), "instances")
  return images


@pytest.fixture(scope="module")
def joined(train_images):
  return cr.join_records(_load("coco_ab_v1_0.json"), train_images, "coco_ab_v1_0.json")


def _reasons(notes):
  return sorted(n.reason for n in notes)


# ---------------------------------------------------------------------------------------------
# Classes.
# ---------------------------------------------------------------------------------------------


def test_classes_are_the_80_used_ids_in_order():
  assert cr.NUM_CLASSES == 80 and len(cr.COCO_91_NAMES) == 91
  assert cr.CATEGORY_IDS[:13] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14)
  assert cr.CATEGORY_IDS[-1] == 90 and list(cr.CATEGORY_IDS) == sorted(cr.CATEGORY_IDS)
  assert cr.CLASS_NAMES[0] == "person" and cr.CLASS_NAMES[11] == "stop sign"
  assert cr.CLASS_NAMES[79] == "toothbrush"
  assert "street sign" not in cr.CLASS_NAMES and "hair brush" not in cr.CLASS_NAMES
  assert cr.icon_class("stop sign") == (11, None)
  assert cr.icon_class("street sign") == (None, "add_icon_of_unused_category")
  assert cr.icon_class("unicorn") == (None, "add_unknown_icon_name")
  assert cr.icon_class(None) == (None, "add_unknown_icon_name")


def test_instances_with_other_categories_are_rejected():
  data = _load("annotations/instances_val2014.json")
  data["categories"] = data["categories"][:-1]
  with pytest.raises(ValueError, match="my_instances.json"):
    cr.parse_instances(data, "my_instances.json")
  data = _load("annotations/instances_val2014.json")
  data["categories"][0]["name"] = "human"
  with pytest.raises(ValueError, match="categories differ"):
    cr.parse_instances(data, "x.json")
  with pytest.raises(ValueError, match="not a COCO instances file"):
    cr.parse_instances([], "x.json")
  for key in ("images", "annotations"):
    data = _load("annotations/instances_val2014.json")
    data[key] = None
    with pytest.raises(ValueError, match=f"x.json: '{key}' is a NoneType, not a list"):
      cr.parse_instances(data, "x.json")


# ---------------------------------------------------------------------------------------------
# The official target, case by case.
# ---------------------------------------------------------------------------------------------


def _add(icon, x=None, y=None, point=True):
  return {"actionType": "add", "iconType": icon, "pointFrom": None,
          "pointTo": {"x": x, "y": y} if point else None, "timeAt": 1}


def test_only_adds_count_and_a_later_add_overwrites():
  actions = [_add("person", 0.5, 0.4), _add("tie", 0.2, 0.25),
             {"actionType": "move", "iconType": "tie", "pointFrom": {"x": 0.2, "y": 0.25},
              "pointTo": {"x": 0.9, "y": 0.9}, "timeAt": 2},
             {"actionType": "remove", "iconType": "person", "pointFrom": {"x": 0.5, "y": 0.4},
              "pointTo": None, "timeAt": 3},
             _add("tie", 0.52, 0.66)]
  points, notes = cr.official_points(actions, "img")
  assert points == {K["person"]: (0.5, 0.4), K["tie"]: (0.52, 0.66)}
  assert notes == []


@pytest.mark.parametrize("action, reason", [
    (_add("unicorn", 0.5, 0.5), "add_unknown_icon_name"),
    (_add("street sign", 0.5, 0.5), "add_icon_of_unused_category"),
    (_add("cat", point=False), "add_without_point"),
    (_add("cat", float("nan"), 0.5), "add_point_not_a_number"),
    (_add("cat", None, 0.5), "add_point_not_a_number"),
    (_add("cat", "0.3", 0.5), "add_point_not_a_number"),
    (_add("cat", 0.5, float("inf")), "add_point_not_a_number"),
    (_add("cat", 1.5, 0.5), "add_point_outside_image"),
    (_add("cat", 0.5, -0.03), "add_point_outside_image"),
    ({"actionType": "zoom", "iconType": "cat", "pointTo": {"x": 0.1, "y": 0.1}},
     "unknown_action_type"),
    ("add", "malformed_action"),
])
def test_an_unusable_add_is_dropped_and_the_earlier_add_stands(action, reason):
  points, notes = cr.official_points([_add("cat", 0.3, 0.7), action], "img.jpg")
  assert points == {K["cat"]: (0.3, 0.7)}
  assert notes == [cr.Note(cr.REPAIR, reason, "img.jpg")]


def test_points_just_outside_the_image_are_clipped():
  points, notes = cr.official_points([_add("boat", 1.01, -0.005)], "img.jpg")
  assert points == {K["boat"]: (1.0, 0.0)}
  assert _reasons(notes) == ["add_point_clipped_to_image"]


def test_record_joins_with_ground_truth(train_images, joined):
  byproducts, image_notes, _ = joined
  targets, notes = cr.example_targets(cr.Entry(train_images[9], byproducts[9]))
  assert notes == []
  assert np.flatnonzero(targets["labels"]).tolist() == sorted([K["person"], K["tie"]])
  # (x, y) order: x right, y down.
  np.testing.assert_allclose(targets["points"][K["person"]], [0.5, 0.4])
  np.testing.assert_allclose(targets["points"][K["tie"]], [0.52, 0.66])
  assert np.flatnonzero(targets["has_points"]).tolist() == sorted([K["person"], K["tie"]])
  others = np.ones(80, bool)
  others[[K["person"], K["tie"]]] = False
  assert (targets["points"][others] == -1).all()
  assert targets["num_actions"] == 5 and targets["mouse_trace_length"] == 8
  assert targets["time_spent_ms"] == 15000.0
  # Boxes: (x_min, y_min, x_max, y_max) over the image size; category 12 was skipped.
  np.testing.assert_allclose(targets["boxes"], [[40 / 160, 10 / 160, 120 / 160, 160 / 160],
                                                [74 / 160, 88 / 160, 86 / 160, 118 / 160]])
  assert targets["box_labels"].tolist() == [K["person"], K["tie"]]
  assert targets["boxes"].dtype == np.float32 and targets["box_labels"].dtype == np.int64
  assert image_notes[9] == []


def test_click_on_a_class_not_in_ground_truth_gives_no_point_and_no_label(train_images, joined):
  byproducts, image_notes, _ = joined
  name = _file_name("train2014", 25)
  assert set(_reasons(image_notes[25])) == {"original_size_zero", "add_unknown_icon_name"}
  targets, notes = cr.example_targets(cr.Entry(train_images[25], byproducts[25]))
  assert notes == [cr.Note(cr.REPAIR, "click_on_class_not_in_ground_truth", name)]
  assert not targets["labels"][K["dog"]] and not targets["has_points"][K["dog"]]
  assert (targets["points"][K["dog"]] == -1).all()
  np.testing.assert_allclose(targets["points"][K["cat"]], [0.6, 0.45])


def test_ground_truth_class_never_clicked_keeps_its_label(train_images, joined):
  byproducts, image_notes, _ = joined
  assert _reasons(image_notes[30]) == ["add_without_point", "original_size_differs_from_instances"]
  targets, _ = cr.example_targets(cr.Entry(train_images[30], byproducts[30]))
  for name in ("cup", "spoon", "dining table"):
    assert targets["labels"][K[name]], name
  assert targets["has_points"][K["cup"]]
  assert not targets["has_points"][K["spoon"]] and not targets["has_points"][K["dining table"]]
  # The crowd annotation counts as a label and a box, as in the official loader.
  assert targets["box_labels"].tolist() == [K["cup"], K["cup"], K["spoon"], K["dining table"]]


def test_bad_points_of_one_record(train_images, joined):
  byproducts, image_notes, _ = joined
  assert _reasons(image_notes[34]) == sorted(
      ["add_icon_of_unused_category", "add_point_not_a_number", "add_point_outside_image",
       "add_point_clipped_to_image", "add_point_not_a_number", "add_point_not_a_number",
       "unknown_action_type"])
  targets, _ = cr.example_targets(cr.Entry(train_images[34], byproducts[34]))
  clicked = {cr.CLASS_NAMES[k] for k in np.flatnonzero(targets["has_points"])}
  assert clicked == {"airplane", "boat"}
  np.testing.assert_allclose(targets["points"][K["airplane"]], [0.45, 0.5])  # NaN add dropped.
  np.testing.assert_allclose(targets["points"][K["boat"]], [1.0, 0.0])
  assert targets["labels"][[K["truck"], K["bird"], K["kite"]]].all()


def test_join_skips_and_duplicates(train_images, joined):
  byproducts, _, left_out = joined
  assert set(byproducts) == {9, 25, 30, 34, 42, 61, 64, 71, 72, 73, 74}
  assert byproducts[42].points == ((K["bench"], 0.8, 0.3),)  # The later record wins.
  assert {(n.kind, n.reason) for n in left_out} == {
      (cr.SKIP, "byproduct_record_image_not_in_instances"),
      (cr.SKIP, "malformed_byproduct_record"), (cr.SKIP, "duplicate_byproduct_record")}
  assert any("image_id 999" in n.name for n in left_out)
  with pytest.raises(ValueError, match="ab.json"):
    cr.join_records({"image_id": 1}, train_images, "ab.json")


def test_entries_note_images_without_record(train_images, joined):
  byproducts, image_notes, _ = joined
  result = cr.entries(train_images, byproducts, image_notes)
  assert [e.image.image_id for e in result] == sorted(train_images)
  without = {e.image.image_id for e in result if e.byproducts is None}
  assert without == {36, 49}
  for entry in result:
    if entry.image.image_id in without:
      assert "no_byproduct_record" in _reasons(entry.notes)
  assert all(not e.notes for e in cr.entries(train_images))


def test_boxes_are_clipped_or_dropped(train_images, joined):
  byproducts, image_notes, _ = joined
  assert _reasons(image_notes[74]) == ["time_spent_missing"]
  targets, notes = cr.example_targets(cr.Entry(train_images[74], byproducts[74]))
  assert _reasons(notes) == ["box_clipped_to_image", "invalid_box_dropped"]
  np.testing.assert_allclose(targets["boxes"], [[100 / 320, 100 / 320, 300 / 320, 1.0]])
  assert targets["labels"][K["vase"]] and targets["has_points"][K["vase"]]
  assert targets["time_spent_ms"] == -1


def test_instance_notes(train_images):
  _, notes = cr.parse_instances(_load("annotations/instances_train2014.json"), "instances")
  assert _reasons(notes) == ["annotation_of_unknown_category", "annotation_of_unknown_image"]
  assert train_images[36].category_ids == ()


# ---------------------------------------------------------------------------------------------
# Files and images.
# ---------------------------------------------------------------------------------------------


def test_missing_files_are_all_listed(tmp_path):
  os.makedirs(tmp_path / "val2014")
  with pytest.raises(FileNotFoundError) as info:
    cab.find_files(str(tmp_path))
  message = str(info.value)
  for expected in ("train2014.zip", "instances_train2014.json", "coco_ab_v1_0.json",
                   "instances_train2014_metadata.json", "instances_val2014.json"):
    assert expected in message
  assert "validation images" not in message


def test_top_level_layout_and_zip_images(tmp_path):
  for name in ("instances_train2014.json", "instances_val2014.json"):
    shutil.copy(os.path.join(COCO_FIXTURE, "annotations", name), tmp_path)
  shutil.copy(os.path.join(COCO_FIXTURE, "coco_ab_v1_0.json"),
              tmp_path / "instances_train2014_metadata.json")
  with zipfile.ZipFile(tmp_path / "train2014.zip", "w") as z:
    z.write(os.path.join(PHOTOS, "astronaut.jpg"), "train2014/" + _file_name("train2014", 9))
  with zipfile.ZipFile(tmp_path / "val2014.zip", "w") as z:  # No folder inside: also read.
    z.write(os.path.join(PHOTOS, "rocket.jpg"), _file_name("val2014", 133))
  files = cab.find_files(str(tmp_path))
  assert files["train"].images.endswith("train2014.zip")
  assert files["train"].instances == str(tmp_path / "instances_train2014.json")
  assert files["train"].byproducts.endswith("instances_train2014_metadata.json")
  assert files["validation"].byproducts is None
  with open(os.path.join(PHOTOS, "astronaut.jpg"), "rb") as f:
    assert cab.read_image(files["train"].images, _file_name("train2014", 9)) == f.read()
  assert cab.read_image(files["validation"].images, _file_name("val2014", 133)) is not None
  assert cab.read_image(files["train"].images, _file_name("train2014", 10)) is None


def test_unreadable_image_is_skipped_and_a_bad_zip_stops(tmp_path):
  image = cr.CocoImage(1, "COCO_train2014_000000000001.jpg", 160, 160)
  os.makedirs(tmp_path / "train2014" / image.file_name)  # A folder: reading it fails.
  unit = cab.WorkUnit(images=str(tmp_path / "train2014"), entries=(cr.Entry(image, None),))
  builder = tfds.builder("coco_ab", data_dir=str(tmp_path / "tfds"))
  report = preparation.PrepareReport()
  assert not list(builder._unit_examples("train", unit, report))  # pylint: disable=protected-access
  assert report.examples == {"skipped:train:unreadable_image_file": [image.file_name]}
  (tmp_path / "train2014.zip").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="train2014.zip"):
    cab.read_image(str(tmp_path / "train2014.zip"), image.file_name)


@pytest.mark.parametrize("photo, reason", [
    ("astronaut.jpg", None), ("coffee_cmyk.jpg", "image: JPEG CMYK re-encoded as RGB JPEG q95"),
    ("camera_grayscale.jpg", "image: JPEG L re-encoded as RGB JPEG q95"),
    ("chelsea_png_named.JPEG", "image: PNG RGB re-encoded as RGB JPEG q95")])
def test_storable_jpeg(photo, reason):
  with open(os.path.join(PHOTOS, photo), "rb") as f:
    data = f.read()
  stored = stored_images.storable_jpeg(data)
  assert stored.repair == reason
  if reason is None:
    assert stored.data is data
  with Image.open(io.BytesIO(stored.data)) as image:
    assert image.format == "JPEG" and image.mode == "RGB"
    assert image.size == (stored.width, stored.height)


def test_truncated_jpeg_cannot_be_stored():
  with open(os.path.join(PHOTOS, "astronaut_truncated.jpg"), "rb") as f:
    data = f.read()
  with pytest.raises(stored_images.UndecodableImageError):
    stored_images.storable_jpeg(data)


# ---------------------------------------------------------------------------------------------
# The real builder, end to end.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """coco_ab/fixture prepared by TFDS's own (sequential) download_and_prepare."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  builder = tfds.builder("coco_ab/fixture", data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=COCO_FIXTURE))
  return builder, COCO_FIXTURE, data_dir


def _records(builder, split):
  source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
  return {int(r["image_id"]): r for r in (source[i] for i in range(len(source)))}


WRITTEN_TRAIN_IDS = [9, 25, 30, 34, 36, 42, 49, 61, 64, 71, 74]


def test_build_writes_the_expected_images_in_id_order(built):
  builder, _, _ = built
  train = _records(builder, "train")
  assert list(train) == WRITTEN_TRAIN_IDS
  assert sorted(_records(builder, "validation")) == [133, 136, 139]
  assert builder.info.metadata["class_names"] == list(cr.CLASS_NAMES)


def test_built_images_are_rgb_jpegs_and_originals_pass_through(built):
  builder, manual_dir, data_dir = built
  for split, coco_split in (("train", "train2014"), ("validation", "val2014")):
    for image_id, record in _records(builder, split).items():
      data = record["image"]
      assert isinstance(data, bytes)
      with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.mode == "RGB", image_id
        image.load()
      if image_id not in (61, 64, 71):  # The re-encoded ones.
        with open(os.path.join(manual_dir, coco_split, _file_name(coco_split, image_id)),
                  "rb") as f:
          assert data == f.read(), image_id


def test_built_targets(built):
  builder, _, _ = built
  train = _records(builder, "train")
  r = train[9]
  assert r["file_name"] in (_file_name("train2014", 9), _file_name("train2014", 9).encode())
  assert r["labels"].dtype == bool and r["labels"].shape == (80,)
  assert r["points"].dtype == np.float32 and r["points"].shape == (80, 2)
  np.testing.assert_allclose(r["points"][K["person"]], [0.5, 0.4])  # (x, y).
  np.testing.assert_allclose(r["points"][K["tie"]], [0.52, 0.66])
  assert np.flatnonzero(r["has_points"]).tolist() == sorted([K["person"], K["tie"]])
  assert r["boxes"].shape == (2, 4) and r["box_labels"].tolist() == [K["person"], K["tie"]]
  assert r["num_actions"] == 5 and r["time_spent_ms"] == 15000.0
  np.testing.assert_allclose(train[42]["points"][K["bench"]], [0.8, 0.3])
  assert not train[25]["labels"][K["dog"]] and not train[25]["has_points"][K["dog"]]
  assert np.flatnonzero(train[25]["has_points"]).tolist() == [K["cat"]]
  empty = train[36]
  assert not empty["labels"].any() and empty["boxes"].shape == (0, 4)
  assert empty["time_spent_ms"] == -1 and empty["num_actions"] == 0
  val = _records(builder, "validation")[139]
  assert val["labels"][[K["cat"], K["dog"]]].all() and not val["has_points"].any()
  assert (val["points"] == -1).all() and val["mouse_trace_length"] == 0


def test_build_report(built):
  builder, _, _ = built
  report = builder.prepare_report
  assert dict(report.written) == {"train": 11, "validation": 3}
  assert dict(report.skipped) == {
      "train:missing_image_file": 1, "train:undecodable_image": 1,
      "train:byproduct_record_image_not_in_instances": 1,
      "train:malformed_byproduct_record": 1, "train:duplicate_byproduct_record": 1,
      "train:annotation_of_unknown_category": 1, "train:annotation_of_unknown_image": 1}
  assert dict(report.repaired) == {
      "train:no_byproduct_record": 2, "train:original_size_zero": 1,
      "train:original_size_differs_from_instances": 1,
      "train:click_on_class_not_in_ground_truth": 1, "train:add_unknown_icon_name": 1,
      "train:add_without_point": 1, "train:add_icon_of_unused_category": 1,
      "train:add_point_not_a_number": 1, "train:add_point_outside_image": 1,
      "train:add_point_clipped_to_image": 1, "train:unknown_action_type": 1,
      "train:image: JPEG CMYK re-encoded as RGB JPEG q95": 1,
      "train:image: JPEG L re-encoded as RGB JPEG q95": 1,
      "train:image: PNG RGB re-encoded as RGB JPEG q95": 1,
      "train:image_size_differs_from_instances": 1,
      "train:box_clipped_to_image": 1, "train:invalid_box_dropped": 1,
      "train:time_spent_missing": 1}
  examples = report.examples
  assert examples["skipped:train:missing_image_file"] == [_file_name("train2014", 73)]
  assert examples["skipped:train:undecodable_image"] == [_file_name("train2014", 72)]
  assert examples["repaired:train:image: JPEG CMYK re-encoded as RGB JPEG q95"] == [
      _file_name("train2014", 61)]
  assert examples["repaired:train:no_byproduct_record"] == [_file_name("train2014", 36),
                                                            _file_name("train2014", 49)]
  assert "image_id 999" in examples["skipped:train:byproduct_record_image_not_in_instances"][0]


def test_units_are_picklable_and_need_no_other_state(built):
  """Units listed by one builder, examples made by a fresh one from the unpickled units."""
  # pylint: disable=protected-access
  builder, manual_dir, data_dir = built
  lister = tfds.builder("coco_ab/fixture", data_dir=data_dir, file_format="array_record")
  lister.set_manual_dir(manual_dir)
  units = pickle.loads(pickle.dumps(lister._work_units("train")))
  assert len(units) == 4  # 13 images.
  assert repr(units[0]).endswith("4 images, image ids 9..34)")
  worker = tfds.builder("coco_ab/fixture", data_dir=data_dir, file_format="array_record")
  report = preparation.PrepareReport()
  keys = [key for unit in units for key, _ in worker._unit_examples("train", unit, report)]
  assert keys == WRITTEN_TRAIN_IDS
  assert report.skipped == builder.prepare_report.skipped
  assert report.repaired == builder.prepare_report.repaired


def test_sharded_preparation_gives_the_same_dataset(built, tmp_path):
  builder, manual_dir, _ = built
  sharded = tfds.builder("coco_ab/fixture", data_dir=str(tmp_path), file_format="array_record")
  sharded.set_manual_dir(manual_dir)
  report = preparation.prepare_sharded(sharded, num_processes=2)
  assert report.to_json() == builder.prepare_report.to_json()
  for split in ("train", "validation"):
    ours, theirs = _records(sharded, split), _records(builder, split)
    assert list(ours) == list(theirs)
    for image_id, record in ours.items():
      for key, value in record.items():
        np.testing.assert_array_equal(value, theirs[image_id][key], err_msg=f"{image_id} {key}")
