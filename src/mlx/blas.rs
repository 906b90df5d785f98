//! Which BLAS/LAPACK MLX's CPU backend runs on, and its thread count.
//!
//! On Linux the `mlx-cpu` wheel's libmlx names the reference (netlib) BLAS it
//! bundles in `mlx_cpu.libs/`; the build links OpenBLAS ahead of it (build.rs,
//! `link_fast_blas`) so that the dynamic linker binds libmlx's `cblas_*` and
//! LAPACK symbols to OpenBLAS. This module asks the dynamic linker where those
//! symbols resolve (`dlsym` from this library's own lookup scope, which is the
//! scope libmlx is searched in, then `dladdr` for the file), so a wrong link is
//! visible at run time (`gomlx info`, `gm_blas_library`, tests/blas.rs).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Which family a BLAS library belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlasKind {
    /// OpenBLAS (fast, threaded).
    OpenBlas,
    /// Apple's Accelerate framework (macOS).
    Accelerate,
    /// Intel MKL.
    Mkl,
    /// BLIS / AOCL.
    Blis,
    /// The reference (netlib) BLAS, e.g. the one the `mlx-cpu` wheel bundles: ~30× slower.
    Reference,
    /// Something else (or not found).
    Other,
}

/// Where MLX's BLAS and LAPACK symbols resolve in this process.
#[derive(Debug, Clone)]
pub struct BlasInfo {
    /// The file defining `cblas_sgemm` (the float32 matmul MLX's CPU backend calls), symlinks resolved.
    pub library: Option<PathBuf>,
    /// The file defining `sgetrf_` (a LAPACK routine MLX's linalg calls).
    pub lapack_library: Option<PathBuf>,
    /// The family of `library`.
    pub kind: BlasKind,
    /// OpenBLAS's build description (`openblas_get_config`), when OpenBLAS is bound.
    pub config: Option<String>,
}

impl BlasInfo {
    /// One line for `gomlx info`: "openblas /usr/lib/.../libopenblasp-r0.3.21.so (OpenBLAS 0.3.21 ..., 2 threads)".
    pub fn summary(&self) -> String {
        let path = self.library.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not found".into());
        let mut s = format!("{} {path}", self.kind.name());
        let mut extra = Vec::new();
        if let Some(c) = &self.config {
            extra.push(c.trim().to_string());
        }
        if let Some(n) = threads() {
            extra.push(format!("{n} threads"));
        }
        if self.lapack_library.is_some() && self.lapack_library != self.library {
            extra.push(format!("LAPACK {}", self.lapack_library.as_ref().unwrap().display()));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        s
    }

    /// Whether this is the slow reference BLAS.
    pub fn is_reference(&self) -> bool {
        self.kind == BlasKind::Reference
    }
}

impl BlasKind {
    /// Lower-case name: "openblas", "accelerate", "mkl", "blis", "reference", "other".
    pub fn name(self) -> &'static str {
        match self {
            BlasKind::OpenBlas => "openblas",
            BlasKind::Accelerate => "accelerate",
            BlasKind::Mkl => "mkl",
            BlasKind::Blis => "blis",
            BlasKind::Reference => "reference",
            BlasKind::Other => "other",
        }
    }

    fn classify(path: &str) -> BlasKind {
        let file = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let lower = path.to_ascii_lowercase();
        if file.contains("openblas") {
            BlasKind::OpenBlas
        } else if lower.contains("accelerate") || lower.contains("veclib") {
            BlasKind::Accelerate
        } else if file.contains("mkl") {
            BlasKind::Mkl
        } else if file.contains("blis") || file.contains("flame") {
            BlasKind::Blis
        } else if file.starts_with("libblas") || file.starts_with("libcblas") || lower.contains("mlx_cpu.libs") {
            // netlib: Debian's /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 or the wheel's libblas-<hash>.so
            BlasKind::Reference
        } else {
            BlasKind::Other
        }
    }
}

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

#[cfg(target_os = "macos")]
const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;
#[cfg(not(target_os = "macos"))]
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// The address `name` resolves to from this library's lookup scope.
fn symbol(name: &str) -> Option<*mut c_void> {
    let c = CString::new(name).ok()?;
    let p = unsafe { dlsym(RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The file that defines `name`, symlinks resolved.
fn defining_file(name: &str) -> Option<PathBuf> {
    let addr = symbol(name)?;
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    if unsafe { dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    let path = PathBuf::from(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned());
    Some(path.canonicalize().unwrap_or(path))
}

/// Where MLX's BLAS resolves in this process (computed once).
pub fn info() -> &'static BlasInfo {
    static INFO: OnceLock<BlasInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        // Make sure libmlx is loaded and initialised (it is a NEEDED dependency, but be explicit).
        super::status::init();
        let library = defining_file("cblas_sgemm");
        let lapack_library = defining_file("sgetrf_");
        let kind = library.as_ref().map(|p| BlasKind::classify(&p.to_string_lossy())).unwrap_or(BlasKind::Other);
        let config = if kind == BlasKind::OpenBlas {
            symbol("openblas_get_config").map(|f| {
                let f: extern "C" fn() -> *const c_char = unsafe { std::mem::transmute(f) };
                unsafe { CStr::from_ptr(f()) }.to_string_lossy().into_owned()
            })
        } else {
            None
        };
        BlasInfo { library, lapack_library, kind, config }
    })
}

/// The path of the library MLX's `cblas_sgemm` resolves to, e.g.
/// "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so", or "not found".
pub fn library() -> String {
    info().library.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not found".into())
}

/// The BLAS's current thread count, where the library says (OpenBLAS).
pub fn threads() -> Option<usize> {
    let f = symbol("openblas_get_num_threads")?;
    let f: extern "C" fn() -> c_int = unsafe { std::mem::transmute(f) };
    usize::try_from(f()).ok()
}

/// Sets the BLAS's thread count, where the library allows it (OpenBLAS).
/// Returns whether it was set.
pub fn set_threads(n: usize) -> bool {
    let Some(f) = symbol("openblas_set_num_threads") else { return false };
    let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(f) };
    f(n.max(1) as c_int);
    true
}

/// The thread count gomlx gives the BLAS: `GOMLX_NUM_THREADS` when set; else
/// None where `OPENBLAS_NUM_THREADS` / `OMP_NUM_THREADS` is set (OpenBLAS read it
/// when it loaded, so it is left alone); else the CPUs this process may use
/// (`available_parallelism`, which follows affinity masks and cgroup quotas,
/// where OpenBLAS's own default counts every online CPU).
pub fn default_threads() -> Option<usize> {
    if let Some(n) = std::env::var("GOMLX_NUM_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        return Some(n.max(1));
    }
    if ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"].iter().any(|v| std::env::var_os(v).is_some()) {
        return None;
    }
    Some(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Sets the BLAS thread count once per process (called by the first MLX use).
///
/// MLX's CPU backend runs each stream's ops on one worker thread of its own;
/// the only parallel work under it is the BLAS (float32 matmuls, LAPACK). So
/// one BLAS thread per usable core and no more: the engine thread waits while
/// the stream computes, and more BLAS threads than cores only spin and evict.
pub(crate) fn configure_threads() {
    if let Some(n) = default_threads() {
        set_threads(n);
    }
}

#[cfg(test)]
mod tests {
    use super::BlasKind;

    #[test]
    fn classifies_paths() {
        assert_eq!(BlasKind::classify("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"), BlasKind::OpenBlas);
        assert_eq!(BlasKind::classify("/w/.venv/lib/python3.11/site-packages/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0"), BlasKind::Reference);
        assert_eq!(BlasKind::classify("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"), BlasKind::Reference);
        assert_eq!(BlasKind::classify("/opt/intel/lib/libmkl_rt.so.2"), BlasKind::Mkl);
    }
}
