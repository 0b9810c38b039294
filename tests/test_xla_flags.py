"""Default XLA flags: added once, never overriding what the user set."""

from luab_jax import xla_flags


def test_defaults_are_added_to_the_users_flags():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  flags = xla_flags.set_defaults(environ).split()
  assert flags[0] == "--xla_force_host_platform_device_count=8"
  assert set(xla_flags.CPU_DEFAULTS) <= set(flags)
  assert xla_flags.set_defaults(environ).split() == flags  # Idempotent.


def test_a_flag_the_user_set_is_kept():
  environ = {"XLA_FLAGS": "--xla_cpu_use_onednn=false"}
  flags = xla_flags.set_defaults(environ).split()
  assert "--xla_cpu_use_onednn=false" in flags
  assert "--xla_cpu_use_onednn=true" not in flags


def test_no_flags_given():
  assert xla_flags.set_defaults({}).split() == list(xla_flags.CPU_DEFAULTS)
