"""Test-wide settings: small thread counts so parallel workers share 2 cores fairly."""

from __future__ import annotations

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
