"""A random-access source over an image folder `ROOT/<class>/<image>` (the ImageFolder layout).

For evaluation sets that are published as folders rather than TFDS datasets, such as the
Background Challenge (`<variant>/val/<class>/*`). Records look like the TFDS ones: `image`
(the encoded file bytes, decoded later by PIL in the pipeline), `label` (the class folder's
position in sorted order) and `file_name` (the path relative to ROOT).
"""

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageFolderSource:
  """Grain-compatible source: `len(source)` and `source[i]` -> {"image", "label", "file_name"}."""

  def __init__(self, root: str):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"Image folder {root!r} does not exist.")
    self.root = root
    self.class_names = tuple(sorted(
        name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))))
    if not self.class_names:
      raise ValueError(f"Image folder {root!r} has no class subfolders (expected "
                       "ROOT/<class>/<image>).")
    self._files = []
    for label, name in enumerate(self.class_names):
      for file_name in sorted(os.listdir(os.path.join(root, name))):
        if file_name.lower().endswith(IMAGE_EXTENSIONS):
          self._files.append((os.path.join(name, file_name), label))
    if not self._files:
      raise ValueError(f"Image folder {root!r} has class folders but no images with an "
                       f"extension in {IMAGE_EXTENSIONS}.")

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> dict:
    relative, label = self._files[index]
    with open(os.path.join(self.root, relative), "rb") as f:
      return {"image": f.read(), "label": label, "file_name": relative}

  def __repr__(self) -> str:
    return f"ImageFolderSource({self.root!r}, {len(self)} images, {len(self.class_names)} classes)"
