#!/usr/bin/env python3
"""Check how mlx 0.32.2 packs affine-quantised values (facts recorded in docs/gguf.md).

Throw-away venv: python3 -m venv /tmp/mlxvenv && /tmp/mlxvenv/bin/pip install mlx==0.32.2 mlx-cpu==0.32.2 numpy
Prints, per bit width, whether a hand-packed little-endian bit stream dequantises and multiplies
correctly, and the words mlx.core.quantize returns for one 32-value row (used in tests/gguf_quants.rs).
"""
import mlx.core as mx, numpy as np, json
rng=np.random.default_rng(0)
for bits in (3,4,5,6,8):
  for gs in (32,64):
    R,C=3,128
    q=rng.integers(0,1<<bits,size=(R,C))
    words=[]
    for r in range(R):
        stream=0
        for i in range(C): stream |= int(q[r,i]) << (bits*i)
        nw=C*bits//32
        words.append([(stream>>(32*k)) & 0xffffffff for k in range(nw)])
    wq=mx.array(np.array(words,dtype=np.uint32))
    s=rng.standard_normal((R,C//gs)).astype(np.float32); b=rng.standard_normal((R,C//gs)).astype(np.float32)
    for dt in (mx.float32, mx.bfloat16):
        deq=np.array(mx.dequantize(wq, mx.array(s).astype(dt), mx.array(b).astype(dt), group_size=gs, bits=bits).astype(mx.float32))
        ref=np.array(mx.array(s).astype(dt).astype(mx.float32)).repeat(gs,1)*q+np.array(mx.array(b).astype(dt).astype(mx.float32)).repeat(gs,1)
        x=rng.standard_normal((2,C)).astype(np.float32)
        y=np.array(mx.quantized_matmul(mx.array(x), wq, mx.array(s).astype(dt), mx.array(b).astype(dt), transpose=True, group_size=gs, bits=bits).astype(mx.float32))
        print(bits,gs,dt,"deq maxerr",np.abs(deq-ref).max(),"qmm maxerr",np.abs(y-x@ref.T).max())
out={}
for bits in (3,4,5,6,8):
    n=32
    w=np.array([(i*5+1) % (1<<bits) for i in range(n)],dtype=np.float32); w[0]=0; w[1]=(1<<bits)-1
    wq,s,b=mx.quantize(mx.array(w.reshape(1,n)),group_size=32,bits=bits)
    s=float(np.array(s).reshape(-1)[0]); b=float(np.array(b).reshape(-1)[0])
    q=[int(round((x-b)/s)) for x in w]
    out[bits]={"words":[int(x) for x in np.array(wq).reshape(-1)],"q":q,"scale":s,"bias":b}
print(json.dumps(out))
