// swift-tools-version:5.9
// The GoMLX Swift package: a thin wrapper over the gomlx C ABI (include/gomlx.h).
// Build the library first (cargo build --release --lib in the repository root);
// see README.md for how the linker finds it.
import Foundation
import PackageDescription

// The repository's library directory (absolute, so the rpath works for tests and apps alike).
let libDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../target/release").standardized.path

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
                .unsafeFlags(["-L\(libDir)", "-Xlinker", "-rpath", "-Xlinker", libDir]),
            ]
        ),
        .testTarget(name: "GoMLXTests", dependencies: ["GoMLX"]),
    ]
)
