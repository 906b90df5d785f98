//! Finds MLX, builds mlx-c against it with CMake, and generates the Rust
//! bindings to mlx-c with bindgen.
//!
//! MLX comes from `MLX_DIR` (a directory holding `MLXConfig.cmake`) or from the
//! pinned wheel in the project venv (`.venv`, made by scripts/setup).
//! mlx-c comes from `MLX_C_DIR` (a prebuilt prefix with include/ and lib/) or is
//! built from the mlx-c 0.7.0 source tree that the crates-registry package
//! mlx-sys 0.7.0 carries (fetched by cargo through deps/mlx-c-src, checksummed).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const MLX_SYS_VERSION: &str = "0.7.0";

fn main() {
    for var in ["MLX_DIR", "MLX_C_DIR", "GOMLX_VENV", "GOMLX_MLX_C_SRC", "GOMLX_BLAS", "CUDA_HOME", "CUDA_PATH", "CUDNN_INCLUDE_PATH", "CUDNN_LIBRARY_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=deps/compat/gomlx_format_compat.h");

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let mlx_cmake = find_mlx_cmake_dir(&root);
    let mlx_lib_dir = mlx_cmake.join("../../../lib").canonicalize().unwrap_or_else(|e| fail(&format!("MLX lib dir next to {}: {e}", mlx_cmake.display())));

    let (mlxc_include, mlxc_lib_dir) = match env::var_os("MLX_C_DIR") {
        Some(prefix) => {
            let prefix = PathBuf::from(prefix);
            (prefix.join("include"), prefix.join("lib"))
        }
        None => {
            let src = find_mlx_c_source(&root);
            let lib_dir = build_mlx_c(&root, &src, &mlx_cmake);
            (src, lib_dir)
        }
    };

    // A fast BLAS ahead of the wheel's reference one (Linux; see link_fast_blas).
    // A CUDA build does its matmuls on the GPU, so there OpenBLAS is optional.
    let cuda = mlx_has_cuda(&mlx_cmake);
    link_fast_blas(cuda);

    // Absolute rpaths: the library, the binary, tests and the C harness find
    // libmlxc and libmlx without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-search=native={}", mlxc_lib_dir.display());
    println!("cargo:rustc-link-search=native={}", mlx_lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=mlxc");
    println!("cargo:rustc-link-lib=dylib=mlx");
    for dir in [&mlxc_lib_dir, &mlx_lib_dir] {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    // Exposed to the crate so `gomlx info` and the C/Go builds can report and reuse them.
    println!("cargo:rustc-env=GOMLX_MLXC_LIB_DIR={}", mlxc_lib_dir.display());
    println!("cargo:rustc-env=GOMLX_MLX_LIB_DIR={}", mlx_lib_dir.display());

    generate_bindings(&mlxc_include);
}

/// Makes a fast BLAS/LAPACK the one libmlx binds to, on Linux.
///
/// The `mlx-cpu` wheel's libmlx names the reference (netlib) BLAS and LAPACK it
/// bundles in `mlx_cpu.libs/` (~7 GFLOP/s for a float32 matmul). The dynamic
/// linker binds libmlx's undefined `cblas_*` / LAPACK symbols by searching the
/// loaded objects breadth-first from the program: an object that is a direct
/// dependency of the program or of libgomlx.so is searched before libmlx's own
/// dependencies (two and three levels further down). So libgomlx.so, the
/// `gomlx` binary and every test binary name `libopenblas.so.0` in their NEEDED
/// list, kept even though no gomlx code calls it (`-as-needed`):
/// whatever links libgomlx.so (the C harness, Go through cgo) inherits it, with
/// no LD_PRELOAD and no change to the wheel's files. `crate::mlx::blas` reports
/// at run time which library the symbols resolved to.
///
/// `GOMLX_BLAS` picks the library: unset or `openblas` = Debian's
/// `libopenblas.so.0` (package libopenblas0-pthread, installed by
/// scripts/setup); `none` = leave the wheel's BLAS; a path to a shared library
/// (e.g. MKL's libmkl_rt.so) = that library, found through an rpath.
fn link_fast_blas(optional: bool) {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return; // macOS: MLX uses Accelerate.
    }
    let choice = env::var("GOMLX_BLAS").unwrap_or_default();
    let file = match choice.as_str() {
        "none" | "reference" => return,
        "" | "openblas" => {
            let name = "libopenblas.so.0";
            if !system_library_exists(name) && optional && choice.is_empty() {
                println!("cargo:warning=gomlx: {name} not found; the CPU device of this CUDA build uses MLX's reference BLAS");
                return;
            }
            if !system_library_exists(name) {
                fail(&format!(
                    "{name} not found: install Debian's libopenblas0-pthread (scripts/setup does), \
                     or build with GOMLX_BLAS=none for MLX's slow reference BLAS"
                ));
            }
            name.to_string()
        }
        path => {
            let path = Path::new(path);
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                fail(&format!("GOMLX_BLAS={choice}: expected openblas, none or a library path"));
            };
            if !path.exists() {
                fail(&format!("GOMLX_BLAS={choice}: no such file"));
            }
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            name.to_string_lossy().into_owned()
        }
    };
    // `-l:NAME`: link the file by its exact name, so the unversioned dev symlink
    // (libopenblas-dev) is not needed; `--no-as-needed`: keep the NEEDED entry
    // although no gomlx code references its symbols (rustc links --as-needed).
    // A link argument (not rustc-link-lib, whose `-as-needed` modifier is
    // unstable) reaches the cdylib, the binary, tests and examples alike. Its place
    // in the NEEDED list does not matter: any direct dependency is searched
    // before libmlx's own, which sit a level or two further down.
    println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-l:{file},--pop-state");
    // gomlx's own cblas_sgemm (src/mlx/blas.rs: single-row products to sgemv)
    // must be visible to libmlx from executables too, which export nothing by default.
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=cblas_sgemm");
    println!("cargo:rustc-env=GOMLX_BLAS_LINKED={file}");
}

/// Whether the dynamic linker's cache or the usual directories hold `name`.
fn system_library_exists(name: &str) -> bool {
    if let Ok(out) = Command::new("/sbin/ldconfig").arg("-p").output() {
        if String::from_utf8_lossy(&out.stdout).contains(name) {
            return true;
        }
    }
    let multiarch = format!("/usr/lib/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    [multiarch.as_str(), "/usr/lib", "/lib", "/usr/local/lib"].iter().any(|d| Path::new(d).join(name).exists())
}

fn fail(msg: &str) -> ! {
    panic!("\n\ngomlx build: {msg}\n(run scripts/setup first, or set MLX_DIR / MLX_C_DIR)\n\n");
}

/// The directory that holds MLXConfig.cmake.
fn find_mlx_cmake_dir(root: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("MLX_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("MLXConfig.cmake").exists() {
            return dir;
        }
        fail(&format!("MLX_DIR={} holds no MLXConfig.cmake", dir.display()));
    }
    let venv = env::var_os("GOMLX_VENV").map(PathBuf::from).unwrap_or_else(|| root.join(".venv"));
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).unwrap_or_else(|_| fail(&format!("no project venv at {}", venv.display())));
    for entry in entries.flatten() {
        let dir = entry.path().join("site-packages/mlx/share/cmake/MLX");
        if dir.join("MLXConfig.cmake").exists() {
            return dir;
        }
    }
    fail(&format!("the venv {} has no mlx wheel", venv.display()))
}

/// Whether this MLX is a CUDA build: its CMake config then requires the CUDA
/// toolkit and cuDNN (the `mlx-cuda-13` wheel sets those `if(ON)` blocks).
fn mlx_has_cuda(mlx_cmake: &Path) -> bool {
    let text = std::fs::read_to_string(mlx_cmake.join("MLXConfig.cmake")).unwrap_or_default();
    let Some(at) = text.find("find_dependency(CUDAToolkit") else { return false };
    text[..at].rfind("if(").is_some_and(|i| text[i..].starts_with("if(ON)"))
}

/// CMake hints for a CUDA build of MLX: the toolkit from `CUDA_HOME`/`CUDA_PATH`
/// (else CMake's own search, e.g. /usr/local/cuda), and cuDNN from
/// `CUDNN_INCLUDE_PATH`/`CUDNN_LIBRARY_PATH` or else pip's `nvidia-cudnn-cu13`
/// next to the mlx wheel (which is where the wheel's libmlx finds it at run time).
fn cuda_cmake_args(mlx_cmake: &Path) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(home) = env::var_os("CUDA_HOME").or_else(|| env::var_os("CUDA_PATH")) {
        let home = PathBuf::from(home);
        args.push(format!("-DCUDAToolkit_ROOT={}", home.display()));
        let nvcc = home.join("bin/nvcc");
        if nvcc.exists() {
            args.push(format!("-DCMAKE_CUDA_COMPILER={}", nvcc.display()));
        }
    }
    // .../site-packages/mlx/share/cmake/MLX -> .../site-packages/nvidia/cudnn
    let pip_cudnn = mlx_cmake.join("../../../../nvidia/cudnn");
    let include = env::var_os("CUDNN_INCLUDE_PATH").map(PathBuf::from).unwrap_or_else(|| pip_cudnn.join("include"));
    let lib = env::var_os("CUDNN_LIBRARY_PATH").map(PathBuf::from).unwrap_or_else(|| pip_cudnn.join("lib"));
    if include.join("cudnn.h").exists() {
        args.push(format!("-DCUDNN_INCLUDE_PATH={}", include.canonicalize().unwrap_or(include).display()));
    }
    if lib.exists() {
        args.push(format!("-DCUDNN_LIBRARY_PATH={}", lib.canonicalize().unwrap_or(lib).display()));
    }
    args
}

/// The mlx-c source tree inside the registry copy of mlx-sys.
fn find_mlx_c_source(root: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("GOMLX_MLX_C_SRC") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = search_registry() {
        return dir;
    }
    // Not fetched yet: let cargo fetch (and checksum) the pinned package.
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["fetch", "--locked", "--manifest-path"]).arg(root.join("deps/mlx-c-src/Cargo.toml")).status();
    if !matches!(status, Ok(s) if s.success()) {
        fail("cargo fetch of mlx-sys (the mlx-c source) failed");
    }
    search_registry().unwrap_or_else(|| fail("mlx-sys source not found after cargo fetch"))
}

fn search_registry() -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = cargo_home.join("registry/src");
    for index in std::fs::read_dir(src).ok()?.flatten() {
        let dir = index.path().join(format!("mlx-sys-{MLX_SYS_VERSION}/src/mlx-c"));
        if dir.join("mlx/c/mlx.h").exists() {
            return Some(dir);
        }
    }
    None
}

/// Configures (once) and builds mlx-c in a stable directory under `.deps/`, so
/// that cargo profiles share one build and a second run is a no-op for ninja.
fn build_mlx_c(root: &Path, src: &Path, mlx_cmake: &Path) -> PathBuf {
    let compat = root.join("deps/compat/gomlx_format_compat.h");
    let cuda_args = if mlx_has_cuda(mlx_cmake) { cuda_cmake_args(mlx_cmake) } else { Vec::new() };
    let mut key_text = format!("{}|{}|{}", src.display(), mlx_cmake.display(), std::fs::read_to_string(&compat).unwrap_or_default());
    if !cuda_args.is_empty() {
        key_text.push_str(&format!("|{}", cuda_args.join(" ")));
    }
    let key = fnv1a(&key_text);
    let build = root.join(".deps").join(format!("mlx-c-{MLX_SYS_VERSION}-{key:016x}"));
    let generator = if which("ninja") { "Ninja" } else { "Unix Makefiles" };
    if !build.join("CMakeCache.txt").exists() {
        let status = Command::new("cmake")
            .arg("-S")
            .arg(src)
            .arg("-B")
            .arg(&build)
            .args(["-G", generator, "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON"])
            .args(["-DMLX_C_USE_SYSTEM_MLX=ON", "-DMLX_C_BUILD_EXAMPLES=OFF"])
            .arg(format!("-DMLX_DIR={}", mlx_cmake.display()))
            .args(&cuda_args)
            // GCC 12's libstdc++ has no std::format, which one mlx-c header uses.
            .arg(format!("-DCMAKE_CXX_FLAGS=-include {}", compat.display()))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            let _ = std::fs::remove_dir_all(&build);
            fail("cmake configure of mlx-c failed");
        }
    }
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "2".into());
    let status = Command::new("cmake").arg("--build").arg(&build).args(["--parallel", &jobs]).status();
    if !matches!(status, Ok(s) if s.success()) {
        fail("building mlx-c failed");
    }
    build
}

fn generate_bindings(include: &Path) {
    let header = include.join("mlx/c/mlx.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("mlx_.*|_mlx_.*")
        .allowlist_type("mlx_.*")
        .allowlist_var("MLX_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen over {}: {e}", include.display())));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("mlx_c.rs");
    bindings.write_to_file(out).expect("write bindings");
}

fn which(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
