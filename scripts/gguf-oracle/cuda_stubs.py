#!/usr/bin/env python3
"""Let PyPI's (CUDA-only) Linux torch wheel import on a machine without the nvidia-* wheels.

torch is installed with --no-deps, so the CUDA libraries its .so files name in DT_NEEDED
(libcudart, libcublas, libcudnn, libnccl, ...) are absent and `import torch` fails. For each
missing library we build a small stand-in with the same soname and symbol versions whose every
symbol is a function that returns 100 (cudaErrorNoDevice). Nothing calls them on the CPU path:
torch.cuda.is_available() is False. The stand-ins go into torch/lib (on torch's RPATH).

Usage: cuda_stubs.py SITE_PACKAGES
"""
import glob, os, re, subprocess, sys, tempfile

MARK = "gomlx_gguf_oracle_cuda_stub"


def dyn(args, path):
    return subprocess.run(args + [path], capture_output=True, text=True, check=False).stdout


def main(site):
    libdir = os.path.join(site, "torch", "lib")
    own = [p for p in glob.glob(os.path.join(libdir, "*.so*")) + glob.glob(os.path.join(site, "torch", "_C*.so"))
           if MARK not in dyn(["nm", "-D", "--defined-only"], p)]
    present = {os.path.basename(p) for p in own}
    system = set(re.findall(r"^\s*(\S+) \(", subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout, re.M))
    needed = set()
    for p in own:
        needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn(["readelf", "-d"], p)))
    missing = sorted(n for n in needed if n not in present and n not in system)
    if not missing:
        print("cuda_stubs: nothing missing"); return
    defined = set()
    for p in own:
        for line in dyn(["nm", "-D", "--defined-only"], p).splitlines():
            parts = line.split()
            if len(parts) >= 3:
                defined.add(parts[2].split("@")[0])
    # symbol -> version (None when unversioned); versions name their library (e.g. libcudart.so.13)
    undefined = {}
    for p in own:
        for line in dyn(["nm", "-D", "--undefined-only"], p).splitlines():
            sym = line.split()[-1]
            name, _, ver = sym.partition("@")
            ver = ver.lstrip("@") or None
            if ver is not None or name not in undefined:
                undefined[name] = ver
    libc_like = ("GLIBC", "GLIBCXX", "CXXABI", "GCC", "OMP", "GOMP", "ZLIB")
    per_lib = {m: {} for m in missing}
    loose = set()
    for name, ver in undefined.items():
        if name in defined:
            continue
        if ver is None:
            loose.add(name)
        elif not ver.startswith(libc_like):
            owner = next((m for m in missing if ver == m), None) or \
                    next((m for m in missing if ver.startswith(m.split(".so")[0] + ".")), None) or \
                    next((m for m in missing if m.split(".so")[0].lower() in ver.lower()), missing[0])
            per_lib[owner].setdefault(ver, set()).add(name)
    # Unversioned symbols are mostly libc's weak ones; keep only those no system library defines.
    sysdefs = set()
    for lib in ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libdl.so.2", "libpthread.so.0", "librt.so.1"):
        path = next(iter(glob.glob(f"/usr/lib/x86_64-linux-gnu/{lib}") + glob.glob(f"/lib/x86_64-linux-gnu/{lib}")), None)
        if path:
            sysdefs.update(l.split()[-1].split("@")[0] for l in dyn(["nm", "-D", "--defined-only"], path).splitlines() if l.split())
    loose = {s for s in loose if s not in sysdefs and not s.startswith(("_ITM", "__gmon", "_Jv"))}
    home = "libcudart.so.13" if "libcudart.so.13" in per_lib else missing[0]
    per_lib[home].setdefault(None, set()).update(loose)
    with tempfile.TemporaryDirectory() as tmp:
        for soname, vers in per_lib.items():
            syms = sorted({s for v in vers.values() for s in v})
            src, vmap = os.path.join(tmp, "s.c"), os.path.join(tmp, "v.map")
            with open(src, "w") as f:
                f.write(f"int {MARK}(void) {{ return 100; }}\n")
                for s in syms:
                    f.write(f"int {s}(void) {{ return 100; }}\n")
            with open(vmap, "w") as f:
                named = [v for v in vers if v]
                for v in named:
                    f.write(f"{v} {{ global: {''.join(x + '; ' for x in sorted(vers[v]))}}};\n")
                if not named:
                    f.write("{ global: *; };\n")
                else:
                    extra = sorted(vers.get(None, set()))
                    f.write(f"GOMLX_STUB {{ global: {MARK}; {''.join(x + '; ' for x in extra)}local: *; }};\n")
            out = os.path.join(libdir, soname)
            subprocess.run(["gcc", "-shared", "-fPIC", "-o", out, src, f"-Wl,-soname,{soname}",
                            f"-Wl,--version-script,{vmap}"], check=True)
            print(f"cuda_stubs: {soname} ({len(syms)} symbols)")


if __name__ == "__main__":
    main(sys.argv[1])
