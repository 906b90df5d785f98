//! Devices and streams. Every op runs on the calling thread's current stream;
//! an engine thread sets its own (the design's one-stream-per-model rule).

use super::{status, sys};
use crate::Result;
use std::cell::RefCell;
use std::ffi::CStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    fn raw(self) -> sys::mlx_device_type {
        match self {
            DeviceKind::Cpu => sys::MLX_CPU,
            DeviceKind::Gpu => sys::MLX_GPU,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

struct Device(sys::mlx_device);

impl Device {
    fn new(kind: DeviceKind) -> Device {
        Device::indexed(kind, 0)
    }

    fn indexed(kind: DeviceKind, index: usize) -> Device {
        status::init();
        Device(unsafe { sys::mlx_device_new_type(kind.raw(), index as i32) })
    }
}

/// How many devices of `kind` MLX sees (0 GPUs where it has no GPU backend).
pub fn device_count(kind: DeviceKind) -> usize {
    if kind == DeviceKind::Gpu && !gpu_available() {
        return 0;
    }
    status::init();
    let mut n: std::os::raw::c_int = 0;
    match status::check(unsafe { sys::mlx_device_count(&mut n, kind.raw()) }) {
        Ok(()) => n.max(0) as usize,
        Err(_) => 1,
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        unsafe { sys::mlx_device_free(self.0) };
    }
}

/// Whether MLX has a GPU backend (Metal or CUDA) with a device present.
pub fn gpu_available() -> bool {
    let dev = Device::new(DeviceKind::Gpu);
    let mut avail = false;
    let rc = unsafe { sys::mlx_device_is_available(&mut avail, dev.0) };
    rc == 0 && avail
}

/// The GPU where MLX has one, else the CPU.
pub fn default_device() -> DeviceKind {
    if gpu_available() {
        DeviceKind::Gpu
    } else {
        DeviceKind::Cpu
    }
}

/// An MLX stream (a queue of work on one device).
pub struct Stream {
    raw: sys::mlx_stream,
    kind: DeviceKind,
}

// An mlx_stream is a small handle (device + index); moving it to the engine
// thread that will use it is sound.
unsafe impl Send for Stream {}

impl Stream {
    /// A new stream of its own on `kind`, e.g. for a model's engine thread.
    pub fn new(kind: DeviceKind) -> Result<Stream> {
        if kind == DeviceKind::Gpu && !gpu_available() {
            return Err(crate::Error::InvalidArgument("device gpu requested but this MLX build has no GPU available".into()));
        }
        let dev = Device::new(kind);
        let raw = unsafe { sys::mlx_stream_new_device(dev.0) };
        Ok(Stream { raw, kind })
    }

    /// A new stream on device `index` of `kind` (a GPU replica's); index 0 is `new`'s.
    pub fn new_on(kind: DeviceKind, index: usize) -> Result<Stream> {
        if index == 0 {
            return Stream::new(kind);
        }
        let n = device_count(kind);
        if index >= n {
            return Err(crate::Error::InvalidArgument(format!("{} device {index} requested but MLX sees {n}", kind.name())));
        }
        let dev = Device::indexed(kind, index);
        let raw = unsafe { sys::mlx_stream_new_device(dev.0) };
        Ok(Stream { raw, kind })
    }

    /// This thread's default stream on `kind`.
    pub fn default_for(kind: DeviceKind) -> Result<Stream> {
        let dev = Device::new(kind);
        let mut raw = unsafe { sys::mlx_stream_new() };
        status::check(unsafe { sys::mlx_get_default_stream(&mut raw, dev.0) })?;
        Ok(Stream { raw, kind })
    }

    pub(crate) fn raw(&self) -> sys::mlx_stream {
        self.raw
    }

    pub fn device(&self) -> DeviceKind {
        self.kind
    }

    /// Waits until all work queued on this stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        status::check(unsafe { sys::mlx_synchronize(self.raw) })
    }

    pub fn describe(&self) -> String {
        let mut s = unsafe { sys::mlx_string_new() };
        unsafe { sys::mlx_stream_tostring(&mut s, self.raw) };
        let text = unsafe { CStr::from_ptr(sys::mlx_string_data(s)) }.to_string_lossy().into_owned();
        unsafe { sys::mlx_string_free(s) };
        text
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        unsafe { sys::mlx_stream_free(self.raw) };
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Stream>> = const { RefCell::new(None) };
    /// A second CPU stream of this thread (its own MLX worker thread), made on
    /// first use by `on_helper`; while `on_helper` runs, ops go to it.
    static HELPER: RefCell<Option<Stream>> = const { RefCell::new(None) };
    static USE_HELPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with its ops queued on a second CPU stream of this thread, so that
/// MLX's single-threaded CPU kernels can run on two cores at once (MLX orders
/// work across streams with events). None when this thread's stream is not a
/// CPU one or the stream cannot be made. Not reentrant: ops queued inside `f`
/// all go to the helper; the main stream is back when `f` returns or unwinds.
pub fn on_helper<R>(f: impl FnOnce() -> R) -> Option<R> {
    if thread_device() != DeviceKind::Cpu {
        return None;
    }
    let ok = HELPER.with(|h| {
        let mut h = h.borrow_mut();
        if h.is_none() {
            *h = Stream::new(DeviceKind::Cpu).ok();
        }
        h.is_some()
    });
    if !ok {
        return None;
    }
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            USE_HELPER.with(|u| u.set(false));
        }
    }
    USE_HELPER.with(|u| u.set(true));
    let _back = Back;
    Some(f())
}

/// Runs `f` with this thread's ops on the CPU (MLX's default CPU stream),
/// whatever its own stream is; the thread's stream is back when `f` returns
/// or unwinds. For work a GPU backend gets wrong (see `models::policy`).
pub fn on_cpu<R>(f: impl FnOnce() -> R) -> Result<R> {
    if thread_device() == DeviceKind::Cpu {
        return Ok(f());
    }
    let cpu = Stream::default_for(DeviceKind::Cpu)?;
    struct Back(Option<Stream>);
    impl Drop for Back {
        fn drop(&mut self) {
            if let Some(s) = self.0.take() {
                CURRENT.with(|c| *c.borrow_mut() = Some(s));
            }
        }
    }
    let _back = Back(CURRENT.with(|c| c.borrow_mut().replace(cpu)));
    Ok(f())
}

/// Makes `stream` the one this thread's ops run on; returns the previous one.
pub fn set_thread_stream(stream: Stream) -> Option<Stream> {
    CURRENT.with(|c| c.borrow_mut().replace(stream))
}

/// Ends this thread's use of MLX: waits for the work queued on its stream
/// (and on its helper stream), then destroys the streams it created (their
/// MLX worker threads included).
/// MLX's per-thread state goes away when the thread exits, while a stream's
/// worker thread would live on to process exit; MLX asks threads that made
/// streams to clear them before they end. Call last on a thread that is ending.
pub fn end_thread() {
    if let Some(s) = CURRENT.with(|c| c.borrow_mut().take()) {
        let _ = s.synchronize();
    }
    // The helper stream (`on_helper`) is one of this thread's too; its work
    // feeds the main stream's, so it is idle by now, but wait for it all the same.
    if let Some(s) = HELPER.with(|h| h.borrow_mut().take()) {
        let _ = s.synchronize();
    }
    unsafe { sys::mlx_clear_streams() };
}

/// The device this thread's ops run on.
pub fn thread_device() -> DeviceKind {
    with_stream(|_, kind| kind)
}

/// Runs `f` with this thread's current stream, creating the default one on
/// first use (GPU where available).
pub(crate) fn with_stream<R>(f: impl FnOnce(sys::mlx_stream, DeviceKind) -> R) -> R {
    CURRENT.with(|c| {
        let mut cur = c.borrow_mut();
        if cur.is_none() {
            let kind = default_device();
            *cur = Some(Stream::default_for(kind).expect("the default stream of an available device"));
        }
        let s = cur.as_ref().unwrap();
        f(s.raw, s.kind)
    })
}

/// The raw current stream for one mlx-c call.
pub(crate) fn current() -> sys::mlx_stream {
    if USE_HELPER.with(|u| u.get()) {
        if let Some(raw) = HELPER.with(|h| h.borrow().as_ref().map(|s| s.raw)) {
            return raw;
        }
    }
    with_stream(|s, _| s)
}

/// Waits for all work queued on this thread's current stream.
pub fn synchronize() -> Result<()> {
    status::check(unsafe { sys::mlx_synchronize(current()) })
}
