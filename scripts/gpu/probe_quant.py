"""MLX's quantised kernels on a GPU, through MLX's Python API (run there by device-run-1.sh).

    python3 scripts/gpu/probe_quant.py

1. Correctness: `quantized_matmul` and `dequantize` on the GPU against the CPU's
   `dequantize` followed by a float32 matmul on the CPU, for 4 and 8 bits, group sizes
   32/64/128, float32 (the oracle fixtures' dtype; bf16 adds its own rounding), a few
   shapes and row counts. Prints the worst relative
   error of each (max |a - b| / max |b|), which says which kernel a wrong 8-bit model
   comes from.
2. Speed: `quantized_matmul` against `dequantize` + dense matmul (and a dense bf16
   matmul for scale), 4-bit bf16, group 64, on real layer shapes, by number of rows:
   where dequantising first wins (gomlx's GPU_DENSE_QMM_ROWS).
"""

import time

import mlx.core as mx

cpu, gpu = mx.Device(mx.cpu), mx.Device(mx.gpu)


def rel(a, b):
    a, b = a.astype(mx.float32), b.astype(mx.float32)
    return (mx.abs(a - b).max() / mx.maximum(mx.abs(b).max(), 1e-30)).item()


def correctness():
    mx.random.seed(0)
    worst = {}
    for bits in (4, 8):
        for group in (32, 64, 128):
            for dtype in (mx.float32,):
                for k, n in ((256, 320), (1152, 768)):
                    if k % group:
                        continue
                    w = mx.random.normal((n, k)).astype(dtype)
                    with mx.stream(cpu):
                        wq, s, b = mx.quantize(w, group_size=group, bits=bits)
                        dense_cpu = mx.dequantize(wq, s, b, group_size=group, bits=bits).astype(mx.float32)
                        mx.eval(wq, s, b, dense_cpu)
                    with mx.stream(gpu):
                        dense_gpu = mx.dequantize(wq, s, b, group_size=group, bits=bits)
                    key = (bits, group, str(dtype).split(".")[-1])
                    e_deq = rel(dense_gpu, dense_cpu)
                    e_qmm = 0.0
                    for m in (1, 5, 48):
                        x = mx.random.normal((m, k)).astype(dtype)
                        with mx.stream(cpu):
                            ref = x.astype(mx.float32) @ dense_cpu.T
                        with mx.stream(gpu):
                            y = mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=group, bits=bits)
                        try:
                            e_qmm = max(e_qmm, rel(y, ref))
                        except RuntimeError as e:
                            # MLX's CUDA backend has refused some shapes ("cuGraphAddKernelNode ...
                            # invalid argument"): name the shape and go on.
                            print(f"bits {bits} group {group} [{m}, {k}] x [{n}, {k}]^T: quantized_matmul failed: {e}")
                            e_qmm = float("inf")
                    d, q = worst.get(key, (0.0, 0.0))
                    worst[key] = (max(d, e_deq), max(q, e_qmm))
    for (bits, group, dt), (d, q) in sorted(worst.items()):
        tol = 1e-3
        flag = lambda e: "ok" if e < tol else "WRONG"
        print(f"bits {bits} group {group:3d} {dt:8s}: dequantize on gpu {d:.2e} ({flag(d)}), quantized_matmul on gpu {q:.2e} ({flag(q)})")


def timed(f, reps=10):
    mx.eval(f())
    mx.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        mx.eval(f())
    mx.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def speed():
    mx.random.seed(1)
    print("ms per product (one eval each, so ~0.05 ms of it is launch overhead): rows | qmm | dequantize+matmul | dense bf16 matmul")
    for k, n in ((1152, 6912), (2048, 8192)):
        w = mx.random.normal((n, k)).astype(mx.bfloat16)
        wq, s, b = mx.quantize(w, group_size=64, bits=4)
        mx.eval(w, wq, s, b)
        line = []
        for m in (1, 16, 64, 256, 2048):
            x = mx.random.normal((m, k)).astype(mx.bfloat16)
            mx.eval(x)
            q = timed(lambda: mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=64, bits=4))
            d = timed(lambda: x @ mx.dequantize(wq, s, b, group_size=64, bits=4).T)
            f = timed(lambda: x @ w.T)
            line.append(f"{m}: {q:.3f} | {d:.3f} | {f:.3f}")
        print(f"[{k} -> {n}] " + "; ".join(line))


if __name__ == "__main__":
    correctness()
    speed()
