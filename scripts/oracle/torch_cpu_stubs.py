#!/usr/bin/env python3
"""Make PyPI's Linux x86_64 torch wheel run CPU-only without the nvidia-* packages.

The only torch wheel on PyPI for Linux x86_64 is the CUDA build: its libraries
have DT_NEEDED entries for libcudart, libcublas, libcudnn, libnccl, ... which
normally come from ~3 GB of nvidia-* / cuda-toolkit wheels. The oracle only runs
torch on the CPU, so instead of installing those we install torch with
--no-deps and build tiny stand-in shared libraries with the same SONAMEs and
symbol versions, in which every imported CUDA-library function returns an error
code (100 = cudaErrorNoDevice). The dynamic loader is satisfied, torch imports,
torch.cuda.is_available() is False, and no CUDA code is reached on CPU.

Usage: torch_cpu_stubs.py <site-packages dir>
Writes the stubs into <site-packages>/torch/lib/ (on the RPATH of every torch
library). Idempotent. Needs gcc and binutils (nm, readelf).
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

SYSTEM_LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib"]
STUB_MARK = b"gomlx-oracle-cuda-stub"


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def needed(lib):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run("readelf", "-d", lib))


def version_needs(lib):
    """{version name: soname} from .gnu.version_r."""
    out, cur = {}, None
    for line in run("readelf", "-V", "-W", lib).splitlines():
        m = re.search(r"File: (\S+)\s+Cnt:", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags:", line)
        if m and cur:
            out[m.group(1)] = cur
    return out


def undefined(lib):
    """Strong undefined dynamic symbols as (name, version or '')."""
    out = []
    for line in run("nm", "-D", "--undefined-only", "--with-symbol-versions", lib).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "U":
            name, _, ver = parts[1].partition("@")
            out.append((name, ver.lstrip("@")))
    return out


def defined(lib):
    syms = set()
    for line in run("nm", "-D", "--defined-only", lib).splitlines():
        parts = line.split()
        if len(parts) >= 3:
            syms.add(parts[2].split("@")[0])
    return syms


def is_stub(path):
    try:
        with open(path, "rb") as f:
            return STUB_MARK in f.read()
    except OSError:
        return False


def system_path(soname):
    for d in SYSTEM_LIB_DIRS:
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    return None


def main():
    site = sys.argv[1]
    libdir = os.path.join(site, "torch", "lib")
    libs = sorted(glob.glob(os.path.join(libdir, "*.so*")) + glob.glob(os.path.join(site, "torch", "_C*.so")))
    libs = [p for p in libs if not is_stub(p)]
    present = {os.path.basename(p) for p in libs}
    missing = sorted({n for lib in libs for n in needed(lib) if n not in present and not system_path(n)})
    if not missing:
        print("torch_cpu_stubs: no missing libraries")
        return

    provided = set()  # symbols defined by torch itself or by the system libraries it links
    for lib in libs:
        provided |= defined(lib)
    for n in sorted({n for lib in libs for n in needed(lib)} - set(missing) - present):
        provided |= defined(os.path.realpath(system_path(n)))

    # stubs[soname][version or ''] = {symbol}
    stubs = {m: {} for m in missing}
    loose = set()
    for lib in libs:
        vmap = version_needs(lib)
        for name, ver in undefined(lib):
            owner = vmap.get(ver)
            if owner in stubs:
                stubs[owner].setdefault(ver, set()).add(name)
            elif not ver and name not in provided:
                loose.add(name)
    for per in stubs.values():
        for syms in per.values():
            loose -= syms
    # Unversioned leftovers (nccl, cudnn, ...) go into one stub every torch
    # library loads; an unversioned reference binds to any global definition.
    home = "libcudart.so.13" if "libcudart.so.13" in stubs else missing[0]
    if loose:
        stubs[home].setdefault("", set()).update(loose)

    with tempfile.TemporaryDirectory() as tmp:
        for soname, per in sorted(stubs.items()):
            allsyms = sorted(set().union(*per.values()) if per else set())
            src, vs = os.path.join(tmp, "stub.c"), os.path.join(tmp, "ver.map")
            with open(src, "w") as f:
                f.write('const char gomlx_stub_mark[] = "%s";\n' % STUB_MARK.decode())
                f.write('static const char msg[] = "CUDA is not available (CPU-only torch stub)";\n')
                for s in allsyms:
                    if re.search(r"(ErrorString|StatusString|ErrorName)$", s):
                        f.write("const char *%s(void) { return msg; }\n" % s)
                    else:
                        f.write("long %s(void) { return 100; }\n" % s)
            cmd = ["gcc", "-shared", "-fPIC", "-O0", "-o", os.path.join(libdir, soname), src, "-Wl,-soname," + soname]
            versions = sorted(v for v in per if v)
            if versions:
                with open(vs, "w") as f:
                    for i, v in enumerate(versions):
                        syms = sorted(per[v])
                        if i == 0:  # unversioned symbols ride along in the first node
                            syms = sorted(set(syms) | per.get("", set()) | {"gomlx_stub_mark"})
                        f.write("%s { global: %s; };\n" % (v, "; ".join(syms)))
                cmd.append("-Wl,--version-script=" + vs)
            subprocess.run(cmd, check=True)
            print("torch_cpu_stubs: %s (%d symbols, versions %s)" % (soname, len(allsyms), versions or "-"))


if __name__ == "__main__":
    main()
