"""Multi-host start-up: joins this process to the job's other processes, or does nothing.

Chosen by environment variables, so that the launch scripts and schedulers (which already speak
in environment variables) set them and every entry point reads them the same way:

  nothing set               single host: one process sees all local devices; nothing to do.
  LUAB_DISTRIBUTED=auto     `jax.distributed.initialize()` with no arguments: JAX detects the
                            cluster itself. Cloud TPU VMs / pod slices (every worker learns the
                            coordinator from the TPU metadata), SLURM (`srun`, from SLURM_*),
                            Open MPI and Kubernetes JobSets. `launch/tpu_pod.sh` sets it.
  LUAB_COORDINATOR=HOST:PORT, LUAB_NUM_PROCESSES=N, LUAB_PROCESS_ID=I
                            an explicit coordinator (process 0 listens on HOST:PORT), for
                            clusters JAX does not detect and for local multi-process runs.
                            `launch/slurm_gpu.sbatch` derives them from SLURM's variables; the
                            multi-process test uses them on localhost.

Setting both is an error, and so is an explicit coordinator with a missing or malformed
variable: a half-configured multi-host job must not quietly start as N independent single-host
jobs. `LUAB_LOCAL_DEVICE_IDS` (e.g. "0,1") optionally restricts the process to some local GPUs.

The call must come before anything touches the devices (it is the first thing
`luab_jax.train.main` does). On CPU, cross-process collectives use gloo (JAX's default in this
version, `jax_cpu_collectives_implementation`).

`on_every_process(ok)` is the agreement after work one process can fail alone (a read of one
host's copy of a file): all processes go on together, or none does.
"""

import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

_EXPLICIT = ("LUAB_COORDINATOR", "LUAB_NUM_PROCESSES", "LUAB_PROCESS_ID")


def _int_var(environ, name: str) -> int:
  value = environ[name]
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} must be an integer.") from None


def initialize_args(environ=None) -> dict | None:
  """The `jax.distributed.initialize` keyword arguments the environment asks for; None = none.

  `{}` means "JAX's own cluster detection". Pure (no JAX calls), so it is tested directly.
  """
  environ = os.environ if environ is None else environ
  mode = environ.get("LUAB_DISTRIBUTED", "")
  explicit = [name for name in _EXPLICIT if environ.get(name)]
  if mode not in ("", "auto"):
    raise ValueError(f"LUAB_DISTRIBUTED={mode!r}; use 'auto' or leave it unset.")
  if mode == "auto" and explicit:
    raise ValueError(f"LUAB_DISTRIBUTED=auto and {', '.join(explicit)} are both set; use JAX's "
                     "cluster detection or an explicit coordinator, not both.")
  if mode == "auto":
    return {}
  if not explicit:
    return None
  missing = [name for name in _EXPLICIT if name not in explicit]
  if missing:
    raise ValueError(f"An explicit coordinator needs {', '.join(_EXPLICIT)}; "
                     f"{', '.join(missing)} missing.")
  address = environ["LUAB_COORDINATOR"]
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"LUAB_COORDINATOR={address!r} must be HOST:PORT.")
  num_processes = _int_var(environ, "LUAB_NUM_PROCESSES")
  process_id = _int_var(environ, "LUAB_PROCESS_ID")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"LUAB_PROCESS_ID={process_id} must be in [0, LUAB_NUM_PROCESSES="
                     f"{num_processes}).")
  args = dict(coordinator_address=address, num_processes=num_processes, process_id=process_id)
  if environ.get("LUAB_LOCAL_DEVICE_IDS"):
    ids = environ["LUAB_LOCAL_DEVICE_IDS"].split(",")
    if not all(i.strip().isdigit() for i in ids):
      raise ValueError(f"LUAB_LOCAL_DEVICE_IDS={environ['LUAB_LOCAL_DEVICE_IDS']!r} must be "
                       "comma-separated device numbers, e.g. 0,1.")
    args["local_device_ids"] = [int(i) for i in ids]
  return args


def initialize(environ=None) -> None:
  """Calls `jax.distributed.initialize` as the environment asks (see the module docstring)."""
  args = initialize_args(environ)
  if args is None:
    return
  logging.info("jax.distributed.initialize(%s): waits until every process of the job has "
               "connected (a process missing, or two with one LUAB_PROCESS_ID, ends in JAX's "
               "timeout, minutes later).",
               ", ".join(f"{k}={v!r}" for k, v in args.items()) or "cluster auto-detection")
  jax.distributed.initialize(**args)
  logging.info("Process %d of %d; %d local and %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process of the job (a collective: every process calls it).

  For work a process can fail alone, before the collective work that depends on it: were one
  process to go on with other work while the others carry on, their collectives would pair up
  across different work, or wait forever.
  """
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))
