"""AOT compilation of the real train step for a small TPU topology (needs libtpu, no TPU).

Skipped where libtpu is not installed; `bash launch/test_tpu_aot.sh` runs it in a venv with
requirements-tpu.txt. The tiny demo model (ViT-mu/8 at 32 px, global batch 16) on v5e:2x2.
"""

import importlib.util

import pytest

from luab_jax import compile as compile_lib
from luab_jax import flops
from tests.test_train import _config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install -r "
                                "requirements-tpu.txt; launch/test_tpu_aot.sh)")

# The compiled count adds what flops.py leaves out (norms, softmax, GELU, loss, optimizer),
# which is large next to a tiny model's matrix products; ViT-B/16 at 224 px lands within 10%.
_FLOPS_FACTOR = 2.0


@pytest.mark.parametrize("options", [{}, {"grad_accum_steps": 2, "ema_decay": 0.999}])
def test_compiles_for_v5e_2x2_and_reports(tiny_data_dir, options):
  config = _config(tiny_data_dir, **options)
  config.model.attention = "xla"  # A TPU program; the demo config's kernel is for CPUs.
  report = compile_lib.compile_report(config, "v5e:2x2")
  print(report.table())
  assert report.num_devices == 4 and report.device_kind == "TPU v5 lite"
  assert report.mesh == {"data": 4, "fsdp": 1, "model": 1}
  assert 0 < report.argument_bytes and 0 < report.temp_bytes
  assert 0 < report.total_bytes < report.hbm_bytes == 16 * 2 ** 30 and report.fits
  assert report.analytic_flops_per_step == flops.train_step_flops(config)
  ratio = report.flops_per_step / report.analytic_flops_per_step
  if options.get("grad_accum_steps", 1) > 1:
    # XLA counts the micro-batch loop's body once: about 1 / k of the step's FLOPs.
    assert report.loops_counted_once and "undercount" in report.table()
    ratio *= options["grad_accum_steps"]
  assert 1 / _FLOPS_FACTOR < ratio < _FLOPS_FACTOR, ratio
  assert "FITS" in report.table()


def test_unknown_generation_names_the_flag():
  with pytest.raises(ValueError, match="--topology='v9x:2x2'"):
    compile_lib.chip("v9x:2x2")
  for topology in ("v5e", "v5e:2xa", "v5e:0x2"):
    with pytest.raises(ValueError, match=f"--topology='{topology}': expected GENERATION:AxB"):
      compile_lib._accelerator_type(topology)  # pylint: disable=protected-access
