// swift-tools-version:5.9
// The GoMLX Swift package: a thin wrapper over the gomlx C ABI (include/gomlx.h).
// Build the library first (cargo build --release --lib in the repository root);
// see README.md for how the linker finds it.
import PackageDescription

let package = Package(
    name: "GoMLX",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "GoMLX", targets: ["GoMLX"]),
    ],
    targets: [
        // System library over gomlx.h; links -lgomlx. The header is found through
        // gomlx.pc (scripts/gomlx-pc) or the include path in module.modulemap.
        .systemLibrary(name: "CGoMLX", path: "Sources/CGoMLX", pkgConfig: "gomlx"),
        .target(
            name: "GoMLX",
            dependencies: ["CGoMLX"],
            linkerSettings: [
                .unsafeFlags(["-L../../target/release", "-Xlinker", "-rpath", "-Xlinker", "@loader_path/../../../../target/release"]),
            ]
        ),
        .testTarget(name: "GoMLXTests", dependencies: ["GoMLX"]),
    ]
)
