"""The yardstick for `make bench`: the same work as internal/torch's Go
benchmarks, timed in Python's torch on the same libtorch. Prints one line per
benchmark: NAME NS_PER_OP."""
import os
import time

import torch

threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
torch.set_num_threads(threads)


def bench(name, fn, min_time=2.0):
    fn()
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
        n *= 2 if elapsed < min_time / 4 else 1
        n = max(n, int(n * min_time / max(elapsed, 1e-9)))
    print(f"{name} {elapsed / n * 1e9:.0f}", flush=True)


x, y = torch.ones(1), torch.ones(1)
bench("TinyAdd", lambda: x + y)

g = torch.Generator().manual_seed(0)
xc = torch.randn(1, 320, 64, 64, generator=g)
w = torch.randn(320, 320, 3, 3, generator=g) * 0.02
b, gw, gb = torch.zeros(320), torch.ones(320), torch.zeros(320)


def conv_block():
    with torch.no_grad():
        h = torch.nn.functional.conv2d(xc, w, b, padding=1)
        torch.nn.functional.silu(torch.nn.functional.group_norm(h, 32, gw, gb, 1e-5))


bench("ConvBlock", conv_block, min_time=5.0)
