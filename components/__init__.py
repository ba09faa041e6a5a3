"""facegate's library: pure, typed building blocks with no Prefect imports."""

import os as _os

# torch's OpenMP threads (libgomp) spin between parallel regions by default. On a shared or busy 2-core
# machine the spinning takes the cores the other threads need: one fused face with flip TTA on 2 torch
# threads went from ~1.0 s to ~0.19 s wall (load 12) with PASSIVE. It must be set before torch loads;
# an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
