"""Running searches at scale: Cloud TPU VMs (tpu_vm) and gin-binding sweeps (sweep)."""
