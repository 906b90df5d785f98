#!/usr/bin/env python3
"""Reference decodes for the GGUF block types gomlx dequantises (Q2_K, Q3_K, IQ4_NL, IQ4_XS,
MXFP4), from gguf-py's own numpy decoders (`gguf.quants.dequantize`, pinned in requirements.txt).

Only gguf and numpy are needed:
    python -m venv /tmp/q && /tmp/q/bin/pip install gguf==0.19.0 numpy==2.4.6
    /tmp/q/bin/python scripts/gguf-oracle/make_quant_references.py
Writes tests/fixtures/gguf/quants_reference.json (committed), read by tests/gguf_quants.rs.
"""
import json
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf", "quants_reference.json")

# type -> (elements per block, bytes per block, offsets of f16 scales, offset of an e8m0 scale)
TYPES = {
    "Q2_K": (T.Q2_K, 256, 84, [80, 82], None),
    "Q3_K": (T.Q3_K, 256, 110, [108], None),
    "IQ4_NL": (T.IQ4_NL, 32, 18, [0], None),
    "IQ4_XS": (T.IQ4_XS, 256, 136, [0], None),
    "MXFP4": (T.MXFP4, 32, 17, [], 0),
}
BLOCKS = 3

rng = np.random.default_rng(20261206)
out = {"gguf": getattr(gguf, "__version__", "0.19.0"), "numpy": np.__version__, "types": {}}
for name, (ty, n, size, f16s, e8m0) in TYPES.items():
    raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
    for b in range(BLOCKS):
        # Finite, modest scales (random f16 bytes would include inf and NaN); the second block's
        # scale is negative, and the last MXFP4 block uses the subnormal exponent 1.
        for k, o in enumerate(f16s):
            v = np.float16((0.01 + 0.003 * b) * (1 + k) * (-1 if (b == 1) != (k == 1) else 1))
            raw[b, o:o + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
        if e8m0 is not None:
            raw[b, e8m0] = [120, 131, 1][b]
    values = gguf.quants.dequantize(raw.reshape(-1), ty).astype(np.float32).reshape(-1)
    assert values.size == BLOCKS * n and np.isfinite(values).all()
    out["types"][name] = {"elements": int(values.size), "bytes": raw.reshape(-1).tobytes().hex(), "values": [float(v) for v in values]}

with open(OUT, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT}: " + ", ".join(f"{k} {v['elements']}" for k, v in out["types"].items()))
