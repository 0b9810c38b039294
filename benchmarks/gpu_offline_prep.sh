#!/usr/bin/env bash
# Prepares, on a machine with network, what benchmarks/gpu_suite.sh needs on a GPU machine
# without one whose Python already has JAX for CUDA and the common scientific stack (numpy,
# scipy, pillow, opencv, absl-py, etils, protobuf, tensorstore, six, ...) but not the rest of
# this project's requirements:
#
#   bash benchmarks/gpu_offline_prep.sh [DIR]        # default DIR: .gpu_carry (git-ignored)
#
# DIR/wheels  the missing packages as wheels for CPython $PY_VERSION (default 3.12) on
#             manylinux x86_64, installed there without their dependencies. flax is 0.12.10,
#             not the pinned 0.12.8, which does not import under jax 0.11.
# DIR/data    the 256-image ImageNet-like `imagenet_ab/fixture` dataset (ArrayRecord) in
#             DIR/data/tfds, prepared here with the project's venv (preparing needs TensorFlow;
#             reading does not).
# DIR/run.sh  run on the GPU machine from the repository root:
#               bash DIR/run.sh OUT_DIR        (PARTS=... as for gpu_suite.sh)
#             installs the wheels into /tmp/site, puts it first on PYTHONPATH and runs the suite.
# About 35 MB in all. Checked on 2026-11-30 in a CPython 3.12 venv holding only jax 0.11.2 (CPU)
# and such a stack: the suite's train_step, ab_backward, end_to_end and input_pipeline ran there
# on the CPU with these wheels.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$(mkdir -p "${1:-$root/.gpu_carry}" && cd "${1:-$root/.gpu_carry}" && pwd)"
py_version="${PY_VERSION:-3.12}"
source "$root/launch/env.sh"

rm -rf "$dir/wheels" && mkdir -p "$dir/wheels"
platforms=()
for tag in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 \
    manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  platforms+=(--platform "${tag}_x86_64")
done
# Ours beyond such an image, then theirs (TFDS's, grain's, clu's) that it lacks.
python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py_version" \
  --implementation cp "${platforms[@]}" -d "$dir/wheels" \
  flax==0.12.10 optax==0.2.8 orbax-checkpoint==0.12.8 grain==0.2.18 \
  tensorflow-datasets==4.9.10 array-record==0.8.6 simplejpeg==1.9.0 turbojpeg==0.0.2 \
  ml-collections==1.1.0 clu==0.0.12 importlib_resources==7.1.0 \
  dm-tree immutabledict simple-parsing docstring-parser tensorflow-metadata termcolor toml \
  portpicker
# promise (TFDS) is published as a source archive only; it is pure Python.
python -m pip wheel --quiet --no-deps -w "$dir/wheels" promise==2.3

rm -rf "$dir/data"
python -m benchmarks.input_pipeline --workdir "$dir/data" --num_images 256 --prepare_only
rm -rf "$dir/data/jpegs"  # The source JPEGs: reading needs only the prepared tfds/.

cat >"$dir/run.sh" <<'RUN'
#!/usr/bin/env bash
# Written by benchmarks/gpu_offline_prep.sh: on the GPU machine, from the repository root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target /tmp/site \
  "$here"/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
bash benchmarks/gpu_suite.sh "$here/data/tfds" "${1:?OUT_DIR}"
RUN
echo "[gpu_offline_prep] $(du -sh "$dir" | cut -f1) in $dir; on the GPU machine: bash $dir/run.sh OUT_DIR"
