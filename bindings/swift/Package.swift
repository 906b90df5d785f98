// swift-tools-version:6.0
// GoMLX: a Swift package over the gomlx C ABI (include/gomlx.h).
//
// Two ways to get the library (README.md, "Linking"):
// - from this repository: build it first (`cargo build --release --lib` in the
//   repository root); the CGoMLX module map links -lgomlx and the tests find
//   target/release through -L and an rpath;
// - on macOS, XCFrameworks: `scripts/build-xcframework` writes CGoMLX.xcframework
//   (libgomlx), CGoMLXMLXC.xcframework (libmlxc) and CGoMLXMLX.xcframework (libmlx
//   and its Metal kernels) next to this file, which then replace the module map.
import Foundation
import PackageDescription

let packageDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let usesXCFramework = FileManager.default.fileExists(
    atPath: packageDir.appendingPathComponent("CGoMLX.xcframework").path)
let binaryTargets = ["CGoMLX", "CGoMLXMLXC", "CGoMLXMLX"]
let repoLibDir = packageDir.appendingPathComponent("../../target/release").standardized.path

let package = Package(
    name: "GoMLX",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "GoMLX", targets: ["GoMLX"]),
    ],
    targets: (usesXCFramework
        ? binaryTargets.map { .binaryTarget(name: $0, path: "\($0).xcframework") }
        : [.systemLibrary(name: "CGoMLX", path: "Sources/CGoMLX")]) + [
        .target(name: "GoMLX", dependencies: usesXCFramework ? binaryTargets.map { .target(name: $0) } : ["CGoMLX"]),
        .testTarget(
            name: "GoMLXTests",
            dependencies: ["GoMLX"],
            // The repository's library, for `swift test` here (test targets of a
            // dependency are never built, so apps never see these flags).
            linkerSettings: usesXCFramework ? [] : [
                .unsafeFlags(["-L\(repoLibDir)", "-Xlinker", "-rpath", "-Xlinker", repoLibDir]),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
