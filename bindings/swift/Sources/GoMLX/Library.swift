import CGoMLX
import Foundation

/// The library's version and devices.
public enum Library {
    /// The gomlx version, e.g. "0.1.0".
    public static var version: String { String(cString: gm_version()) }
    /// The C ABI version of the loaded library.
    public static var abiVersion: UInt32 { gm_abi_version() }
    /// The C ABI version of the header this package was compiled with; equal
    /// to ``abiVersion`` unless the library and the package do not match.
    public static var headerABIVersion: UInt32 { UInt32(GM_ABI_VERSION) }

    /// Whether MLX can run on `device` in this process (``Device/automatic`` always can).
    public static func isAvailable(_ device: Device) -> Bool {
        guard device != .automatic else { return true }
        var available: Int32 = 0
        return gm_device_available(device.rawValue, &available) == GM_OK && available != 0
    }
}

/// MLX's process-wide memory: statistics (bytes) and limits.
public enum Memory {
    /// Bytes held by live MLX arrays.
    public static var active: Int { gm_memory_active() }
    /// The highest ``active`` since start or ``resetPeak()``.
    public static var peak: Int { gm_memory_peak() }
    /// Bytes kept in MLX's buffer cache for reuse.
    public static var cache: Int { gm_memory_cache() }
    /// Restarts peak tracking: MLX sets the peak to zero, and the next
    /// allocation raises it again.
    public static func resetPeak() { gm_memory_reset_peak() }
    /// Sets the memory limit; returns the previous one.
    @discardableResult public static func setLimit(_ bytes: Int) -> Int {
        precondition(bytes >= 0, "a memory limit is not negative")
        return gm_set_memory_limit(bytes)
    }
    /// Sets the buffer-cache limit (0 disables the cache); returns the previous one.
    @discardableResult public static func setCacheLimit(_ bytes: Int) -> Int {
        precondition(bytes >= 0, "a cache limit is not negative")
        return gm_set_cache_limit(bytes)
    }
    /// Returns MLX's cached buffers to the system.
    public static func clearCache() { gm_clear_cache() }
}
