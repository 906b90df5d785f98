// Placeholder crate: only its dependency on mlx-sys matters.
