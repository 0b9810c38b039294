"""ImageNet class subsets of evaluation sets: ImageNet-A, ImageNet-R (200 classes each), ImageNet-9.

Indices are positions among the 1000 ImageNet-1k classes in the order of TFDS's imagenet2012
`labels.txt` (sorted wnids): the label space of every TFDS ImageNet variant, including the
`imagenet_a` and `imagenet_r` builders, whose `label` is a ClassLabel over that same file.

Where the lists come from (data transcribed from the datasets' official evaluation code; the
TFDS builders list the 200 classes nowhere, they take them from the downloaded folder names):
- ImageNet-A: hendrycks/natural-adv-examples, `eval.py`, the keys of `thousand_k_to_200` whose
  value is not -1 (the official evaluation masks the logits with them).
- ImageNet-R: hendrycks/imagenet-r, `eval.py`, the index list written next to
  `imagenet_r_wnids`; tests/test_eval_datasets.py maps that file's wnids through TFDS's
  `labels.txt` and checks that they give exactly these indices.
- ImageNet-9 (Background Challenge, Xiao et al. 2020): MadryLab/backgrounds_challenge,
  `in_to_in9.json` (read from the copy vendored in bytedance/ibot,
  analysis/backgrounds_challenge/in_to_in9.json). The 9 superclasses are WordNet subtrees; dog,
  bird, reptile, carnivore, insect, primate and fish are index ranges, wheeled vehicle and
  musical instrument are scattered classes. 630 ImageNet classes belong to none (-1): a
  prediction there is wrong on every IN-9 image, as in the official evaluation.
"""

import numpy as np

NUM_IMAGENET_CLASSES = 1000

IMAGENET_A_INDICES = (
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96,
    97, 99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254,
    277, 283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319,
    323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386, 397, 400, 401, 402,
    404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461, 462, 470, 472,
    483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569,
    572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677,
    682, 684, 687, 701, 704, 719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779,
    780, 786, 792, 797, 802, 803, 804, 813, 815, 820, 823, 831, 833, 835, 839, 845, 847, 850,
    859, 862, 870, 879, 880, 888, 890, 897, 900, 907, 913, 924, 932, 933, 934, 937, 943, 945,
    947, 951, 954, 956, 957, 959, 971, 972, 980, 981, 984, 986, 987, 988,
)

IMAGENET_R_INDICES = (
    1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97, 99,
    100, 105, 107, 113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161, 162,
    163, 171, 172, 178, 187, 195, 199, 203, 207, 208, 219, 231, 232, 234, 235, 242, 245, 247,
    250, 251, 254, 259, 260, 263, 265, 267, 269, 276, 277, 281, 288, 289, 291, 292, 293, 296,
    299, 301, 308, 309, 310, 311, 314, 315, 319, 323, 327, 330, 334, 335, 337, 338, 340, 341,
    344, 347, 353, 355, 361, 362, 365, 366, 367, 368, 372, 388, 390, 393, 397, 401, 407, 413,
    414, 425, 428, 430, 435, 437, 441, 447, 448, 457, 462, 463, 469, 470, 471, 472, 476, 483,
    487, 515, 546, 555, 558, 570, 579, 583, 587, 593, 594, 596, 609, 613, 617, 621, 629, 637,
    657, 658, 701, 717, 724, 763, 768, 774, 776, 779, 780, 787, 805, 812, 815, 820, 824, 833,
    847, 852, 866, 875, 883, 889, 895, 907, 928, 931, 932, 933, 934, 936, 937, 943, 945, 947,
    948, 949, 951, 953, 954, 957, 963, 965, 967, 980, 981, 983, 988,
)

LABEL_SUBSETS = {"imagenet_a": IMAGENET_A_INDICES, "imagenet_r": IMAGENET_R_INDICES}

# The class folders of the Background Challenge release, in label order (00_dog ... 08_fish).
IN9_CLASSES = ("dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect",
               "musical instrument", "primate", "fish")

# IN-9 class -> ImageNet indices, as inclusive (first, last) ranges.
IN9_RANGES = (
    ((151, 170), (173, 268)),
    ((7, 24), (87, 100), (127, 146)),
    ((407, 408), (428, 428), (436, 436), (444, 444), (468, 468), (511, 511), (547, 547),
     (555, 555), (561, 561), (565, 565), (569, 569), (573, 573), (586, 586), (603, 603),
     (609, 609), (612, 612), (627, 627), (656, 656), (661, 661), (665, 665), (670, 671),
     (675, 675), (690, 690), (705, 705), (717, 717), (734, 734), (751, 751), (757, 757),
     (791, 791), (802, 803), (817, 817), (820, 820), (829, 829), (847, 847), (864, 864),
     (866, 867), (870, 870), (880, 880)),
    ((33, 68),),
    ((269, 280), (286, 299), (356, 362), (387, 388)),
    ((300, 326),),
    ((401, 402), (420, 420), (432, 432), (486, 486), (494, 494), (513, 513), (541, 541),
     (546, 546), (558, 558), (566, 566), (577, 577), (579, 579), (593, 594), (641, 642),
     (683, 684), (687, 687), (699, 699), (776, 776), (822, 822), (875, 875), (881, 881),
     (889, 889)),
    ((365, 384),),
    ((0, 6), (389, 397)),
)


def label_subset(subset) -> np.ndarray:
  """Sorted int32 class indices of a named subset ("imagenet_a", "imagenet_r") or of a list."""
  if isinstance(subset, str):
    if subset not in LABEL_SUBSETS:
      raise ValueError(f"Unknown label_subset {subset!r}; use one of {sorted(LABEL_SUBSETS)} "
                       "or a list of class indices.")
    subset = LABEL_SUBSETS[subset]
  indices = np.unique(np.asarray(subset, np.int64))
  if indices.size == 0 or len(indices) != len(subset):
    raise ValueError(f"label_subset must be distinct class indices, got {list(subset)[:10]}...")
  return indices.astype(np.int32)


def imagenet_to_in9() -> np.ndarray:
  """int32 [1000]: the IN-9 class of each ImageNet class, -1 for the 630 outside all nine."""
  table = np.full(NUM_IMAGENET_CLASSES, -1, np.int32)
  for in9, ranges in enumerate(IN9_RANGES):
    for first, last in ranges:
      table[first:last + 1] = in9
  return table


CLASS_MAPS = {"imagenet_to_in9": imagenet_to_in9}
