# Sourced by device-run-*.sh on the GPU machine (files packed by scripts/gpu/pack): the
# environment, and once per machine the install (wheels, mlx-c built against the CUDA MLX).
# Paths are those of the lent H100/H200 image: the torch venv in /opt/torch holds the NVIDIA libraries.
R=/work/main; D=${PACK:-/tmp/g}
step() { echo; echo "=== $* ($(date +%T))"; }
# Prints one `gomlx bench --json` report's ratios, greedy agreement and decode profile
# (or the tail of its .err file when the bench left no report).
report() { python3 -c "
import json,sys; r=json.load(open(sys.argv[1])); x=r['metrics']
print(sys.argv[1], ', '.join(f\"{k} {v['gomlx']:.4g}/{v['mlx_lm']:.4g}={v['ratio']:.2f}\" for k, v in x.items() if v['gomlx'] is not None), 'agree', r['greedy_agreement'])
print('  profile', [y.get('decode_profile_ms') for v in r['runs']['gomlx'].values() for y in v])" $1 || tail -3 ${1%.json}.err; }
SP=/opt/torch/.venv/lib/python3.12/site-packages
export PYTHONPATH=/tmp/site
B=/tmp/bin
if [ ! -e /tmp/mlxc/libmlxc.so ]; then
  step install
  cat $D/cudawhl.part.* > /tmp/g/mlx_cuda_13-0.32.2-py3-none-manylinux_2_35_x86_64.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/g/mlx_cuda_13-0.32.2-py3-none-manylinux_2_35_x86_64.whl $D/mlx-0.32.2-*.whl $D/mlx_lm-*.whl || exit 1
  # The wheel's libmlx finds cuDNN/cuBLAS/NCCL in ../../nvidia (pip's layout): the image's torch
  # venv has them. Its nvidia/cu13/include lacks crt/ (pip's nvidia-cuda-crt), so MLX's JIT is
  # pointed at the toolkit in /usr/local/cuda by leaving that include directory out.
  mkdir -p /tmp/site/nvidia/cu13
  for x in $SP/nvidia/*; do [ "$(basename $x)" = cu13 ] || ln -sfn $x /tmp/site/nvidia/; done
  for x in $SP/nvidia/cu13/*; do [ "$(basename $x)" = include ] || ln -sfn $x /tmp/site/nvidia/cu13/; done
  mkdir -p /tmp/src && tar xJf $D/mlxc-src.tar.xz -C /tmp/src
  cmake -S /tmp/src/mlx-c -B /tmp/mlxc -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DMLX_C_USE_SYSTEM_MLX=ON -DMLX_C_BUILD_EXAMPLES=OFF \
    -DMLX_DIR=/tmp/site/mlx/share/cmake/MLX -DCUDNN_INCLUDE_PATH=$SP/nvidia/cudnn/include -DCUDNN_LIBRARY_PATH=$SP/nvidia/cudnn/lib > /tmp/cmake.log 2>&1 || tail -30 /tmp/cmake.log
  cmake --build /tmp/mlxc -j16 > /tmp/build.log 2>&1 || tail -30 /tmp/build.log
  # The absolute RUNPATHs the binaries were linked with on the CPU machine (/work/main).
  mkdir -p $R/.deps $R/.venv/lib/python3.11/site-packages
  ln -sfn /tmp/mlxc $R/.deps/mlx-c-0.7.0-7879dc3988a8f88d
  ln -sfn /tmp/site/mlx $R/.venv/lib/python3.11/site-packages/mlx
  mkdir -p .cache/tokenizers && tar xJf $D/tok.tar.xz -C .cache/tokenizers
fi
rm -rf /tmp/bin; tar xJf $D/bins.tar.xz -C /tmp
cd $R
