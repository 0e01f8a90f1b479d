// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "usbredir",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "usbredir", targets: ["usbredir"]),
        .executable(name: "usbredir-bench", targets: ["usbredir-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // 4.x imports FoundationEssentials, not Foundation: without it the
        // static binary carries ICU (~30 MB) for nothing (issue 21).
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // C libraries, found through pkg-config (Debian -dev packages).
        .systemLibrary(name: "CLibUSB", pkgConfig: "libusb-1.0",
                       providers: [.apt(["libusb-1.0-0-dev"])]),
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4",
                       providers: [.apt(["liblz4-dev"])]),
        // Test-only: libusbredirparser, QEMU's own parser, is our wire-format oracle.
        .systemLibrary(name: "CUSBRedirParser", pkgConfig: "libusbredirparser-0.5",
                       providers: [.apt(["libusbredirparser-dev"])]),

        // Layers, lowest first. Dependencies point down only (architecture.md).
        // Common: the few helpers every layer shares (hex ids, FNV-1a, version).
        .target(name: "Common", dependencies: ["CBuildStamp"]),
        // The git commit of --version, written into the built binary
        // (scripts/stamp-commit.py) rather than passed as a build flag.
        .target(name: "CBuildStamp"),
        .target(name: "USBRedirProtocol", dependencies: [
            "Common",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .target(name: "Transport", dependencies: [
            "CLZ4", "Common",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Devices", dependencies: [
            "CLibUSB", "Common",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),   // the stick's file-I/O thread pool
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Session", dependencies: [
            "USBRedirProtocol", "Transport", "Devices", "Common",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),   // the session's event loop
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Profile", dependencies: ["CYAML", "Common"]),
        // Libvirt: domains by name (SPICE address, password, usbredir
        // channels) and their lifecycle events, for the Reconciler. libvirt
        // itself is opened with dlopen on first use (LibvirtLibrary.swift),
        // not linked: a host without libvirt0 runs every other endpoint.
        .target(name: "Libvirt", dependencies: [
            "Common", "Transport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .target(name: "Reconciler", dependencies: [
            "Profile", "Session", "Devices", "Transport", "Libvirt", "Common",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "usbredir", dependencies: [
            "Reconciler", "Profile", "Devices", "Common",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Benchmarks: ratios against reference runs (make bench).
        // reference/ (the C reference host and load generator) and scripts/
        // are built and run by the Makefile, not by SwiftPM.
        .executableTarget(name: "usbredir-bench", dependencies: [
            "USBRedirProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
        ], exclude: ["reference", "scripts"]),

        // Test support: QEMU and guest harness shared by the test targets.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "TransportTests", dependencies: [
            "Common",
            "Transport", "USBRedirProtocol", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),   // the pipeline handlers' tests
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "SessionTests", dependencies: [
            "Common",
            "Session", "Devices", "Transport", "USBRedirProtocol", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "ProfileTests", dependencies: ["Profile", "Common"]),
        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt", "Transport", "Common", "TestSupport"]),
        .testTarget(name: "DocsTests", dependencies: ["Profile", "TestSupport"]),
        // make deb: the package's files, control fields, unit, lintian.
        .testTarget(name: "PackageTests", dependencies: ["TestSupport"]),
        .testTarget(name: "ReconcilerTests", dependencies: [
            "Common",
            "Reconciler", "Profile", "TestSupport", "Transport", "USBRedirProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The command-line module's own pieces (log lines).
        .testTarget(name: "CLITests", dependencies: [
            "usbredir",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "LibUSBTests", dependencies: [
            "Devices", "TestSupport", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // usbredir inside a lab-host VM on a real kernel's usbfs (docs/labhost.md).
        .testTarget(name: "LabHostTests", dependencies: ["TestSupport"]),
        .testTarget(name: "USBRedirProtocolTests", dependencies: [
            "USBRedirProtocol", "CUSBRedirParser",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
