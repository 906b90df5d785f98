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
        if gemv_forwarding() {
            extra.push("matrix-vector GEMMs via sgemv".into());
        }
        if let Some(lapack) = self.lapack_library.as_ref().filter(|l| Some(*l) != self.library.as_ref()) {
            extra.push(format!("LAPACK {}", lapack.display()));
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
    file_of(symbol(name)?)
}

/// The file holding the code at `addr`, symlinks resolved.
fn file_of(addr: *mut c_void) -> Option<PathBuf> {
    let mut info = DlInfo { dli_fname: std::ptr::null(), dli_fbase: std::ptr::null_mut(), dli_sname: std::ptr::null(), dli_saddr: std::ptr::null_mut() };
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
        // libmlx's cblas_sgemm may be gomlx's own forwarding (below): report the BLAS behind it.
        #[cfg(target_os = "linux")]
        let library = match symbol("cblas_sgemm") {
            Some(p) if p == cblas_sgemm as SgemmFn as *mut c_void => next().sgemm.and_then(|f| file_of(f as *mut c_void)),
            _ => defining_file("cblas_sgemm"),
        };
        #[cfg(not(target_os = "linux"))]
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

// ---------------------------------------------------------------------------
// Matrix-vector products: MLX's CPU matmul always calls cblas_sgemm, also for
// a single row (every decode step: x[1,K] · Wᵀ). OpenBLAS 0.3.21 (Debian 12)
// runs such a GEMM through its full GEMM driver, packing the whole weight
// matrix on every call: ~4–5 GB/s on a 2-core machine where sgemv streams the
// same matrix at 15+ GB/s (OpenBLAS 0.3.27+ forwards these itself,
// GEMM_GEMV_FORWARD). gomlx defines `cblas_sgemm`, which libmlx binds to ahead
// of the BLAS (libgomlx.so, or the executable through build.rs's
// `--export-dynamic-symbol`, comes before libopenblas in the lookup order), and
// sends row-major products with M = 1 or N = 1 to `cblas_sgemv`; every other
// call goes unchanged to the BLAS's own `cblas_sgemm` (`RTLD_NEXT`).
// `GOMLX_BLAS_GEMV=0` turns the forwarding off.

type SgemmFn = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);
type SgemvFn = unsafe extern "C" fn(c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[cfg(target_os = "linux")]
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

#[cfg(target_os = "linux")]
extern "C" {
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void;
}

#[cfg(target_os = "linux")]
struct Next {
    sgemm: Option<SgemmFn>,
    sgemv: Option<SgemvFn>,
}

/// Whether single-row products go to `sgemv`: 0 unset (`GOMLX_BLAS_GEMV`, else on), 1 on, 2 off.
static GEMV: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sends single-row float32 products to `sgemv` (true, the default) or leaves
/// them to the BLAS's `sgemm`; process-wide, overriding `GOMLX_BLAS_GEMV`.
pub fn set_gemv_forwarding(on: bool) {
    GEMV.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

fn forward_gemv() -> bool {
    match GEMV.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            static ENV: OnceLock<bool> = OnceLock::new();
            *ENV.get_or_init(|| !matches!(std::env::var("GOMLX_BLAS_GEMV").as_deref(), Ok("0") | Ok("off") | Ok("false")))
        }
    }
}

#[cfg(target_os = "linux")]
fn next() -> &'static Next {
    static NEXT: OnceLock<Next> = OnceLock::new();
    NEXT.get_or_init(|| {
        let own = cblas_sgemm as SgemmFn as *mut c_void;
        let find = |handle: *mut c_void, name: &str| {
            let c = CString::new(name).unwrap();
            let p = unsafe { dlsym(handle, c.as_ptr()) };
            (!p.is_null() && p != own).then_some(p)
        };
        let mut sgemm = find(RTLD_NEXT, "cblas_sgemm");
        if sgemm.is_none() {
            // Not found after this object (unusual link order): ask the BLAS directly.
            for lib in [c"libopenblas.so.0", c"libblas.so.3"] {
                let h = unsafe {
                    dlopen(lib.as_ptr(), 1 /* RTLD_LAZY */)
                };
                if !h.is_null() {
                    sgemm = find(h, "cblas_sgemm");
                    if sgemm.is_some() {
                        break;
                    }
                }
            }
        }
        let sgemv = find(RTLD_DEFAULT, "cblas_sgemv").or_else(|| find(RTLD_NEXT, "cblas_sgemv"));
        Next {
            sgemm: sgemm.map(|p| unsafe { std::mem::transmute::<*mut c_void, SgemmFn>(p) }),
            sgemv: sgemv.map(|p| unsafe { std::mem::transmute::<*mut c_void, SgemvFn>(p) }),
        }
    })
}

/// Whether libmlx's `cblas_sgemm` calls reach gomlx's forwarding (see above).
#[cfg(not(target_os = "linux"))]
pub fn gemv_forwarding() -> bool {
    false
}

/// Whether libmlx's `cblas_sgemm` calls reach gomlx's forwarding (see above).
#[cfg(target_os = "linux")]
pub fn gemv_forwarding() -> bool {
    let own = cblas_sgemm as SgemmFn as *mut c_void;
    symbol("cblas_sgemm") == Some(own) && forward_gemv() && next().sgemv.is_some()
}

#[cfg(target_os = "linux")]
/// The BLAS `cblas_sgemm` with single-row / single-column products sent to
/// `cblas_sgemv` (row-major only, which is what MLX uses). Same contract as CBLAS.
///
/// # Safety
/// The CBLAS contract: the pointers and leading dimensions describe valid matrices.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cblas_sgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    let nx = next();
    let plain = |t: c_int| t == NO_TRANS || t == TRANS;
    if let (true, Some(gemv)) = (forward_gemv() && order == ROW_MAJOR && plain(trans_a) && plain(trans_b) && k > 0, nx.sgemv) {
        if m == 1 {
            // c[1,N] = alpha · a[1,K] · op(B)[K,N] + beta · c  ⇔  c = alpha · op(B)ᵀ a + beta · c
            let inc_a = if trans_a == NO_TRANS { 1 } else { lda };
            let (rows, cols, t) = if trans_b == NO_TRANS { (k, n, TRANS) } else { (n, k, NO_TRANS) };
            if beta == 0.0 {
                std::ptr::write_bytes(c, 0, n as usize); // MLX's output is uninitialised
            }
            gemv(ROW_MAJOR, t, rows, cols, alpha, b, ldb, a, inc_a, beta, c, 1);
            return;
        }
        if n == 1 {
            // c[M,1] = alpha · op(A)[M,K] · b[K,1] + beta · c  (c's stride is ldc)
            let inc_b = if trans_b == NO_TRANS { ldb } else { 1 };
            let (rows, cols) = if trans_a == NO_TRANS { (m, k) } else { (k, m) };
            if beta == 0.0 {
                for i in 0..m as usize {
                    *c.add(i * ldc as usize) = 0.0;
                }
            }
            gemv(ROW_MAJOR, trans_a, rows, cols, alpha, a, lda, b, inc_b, beta, c, ldc);
            return;
        }
    }
    match nx.sgemm {
        Some(f) => f(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc),
        None => {
            eprintln!("gomlx: no cblas_sgemm found behind gomlx's forwarding; aborting");
            std::process::abort();
        }
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
