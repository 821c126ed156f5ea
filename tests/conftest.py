"""Suite-wide settings: one intra-op thread per test process.

The tests run tiny models where thread hand-off costs more than it saves (8x slower
under contention on 2 cores); the benchmarks, not the tests, measure speed.
"""

import torch

torch.set_num_threads(1)
