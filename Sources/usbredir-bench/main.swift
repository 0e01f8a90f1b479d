// usbredir-bench: throughput of the hot paths, each printed as a ratio to a
// reference run measured in the same invocation on the same data (so the
// numbers compare across machines and loads). Not a test: `make bench`.
import Foundation
import NIOCore
import USBRedirProtocol

struct Measurement {
    let name: String
    let bytes: Int
    let seconds: Double
    var mbps: Double { Double(bytes) / seconds / 1e6 }
}

/// Best of `runs` timings of `body`, which processes `bytes` bytes.
func measure(_ name: String, bytes: Int, runs: Int = 5, _ body: () throws -> Void) rethrows -> Measurement {
    var best = Double.infinity
    for _ in 0..<runs {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return Measurement(name: name, bytes: bytes, seconds: best)
}

func report(_ subject: Measurement, against reference: Measurement) {
    let ratio = subject.mbps / reference.mbps
    func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
    print(pad(subject.name, 36) + String(format: " %9.1f MB/s   ", subject.mbps)
          + "reference " + pad(reference.name, 22) + String(format: " %9.1f MB/s   ratio %.3f", reference.mbps, ratio))
}

/// A stream of bulk IN replies as QEMU's usb-storage traffic looks: 120 KiB each.
func bulkStream(packets: Int, data: ByteBuffer) throws -> (ByteBuffer, USBRedirNegotiation) {
    let negotiation = USBRedirNegotiation(role: .host, ours: .all, peer: .all)
    var stream = ByteBuffer()
    for i in 0..<packets {
        let p = USBRedirPacket(id: UInt64(i), .bulkPacket(.init(endpoint: 0x81, status: 0, length: UInt32(data.readableBytes),
                                                                 streamID: 0, data: data)))
        try stream.writeUSBRedirPacket(p, negotiation: negotiation)
    }
    return (stream, negotiation)
}

func parserBenchmark() throws {
    let packets = 1024
    let data = ByteBuffer(bytes: (0..<120 * 1024).map { UInt8($0 % 63) })
    let (stream, _) = try bulkStream(packets: packets, data: data)
    let chunk = 64 * 1024
    let chunks = stride(from: 0, to: stream.readableBytes, by: chunk).map {
        stream.getSlice(at: $0, length: min(chunk, stream.readableBytes - $0))!
    }
    // Reference: gathering the same chunks into one buffer (what any framing must at least do).
    let reference = measure("copy of the chunks", bytes: stream.readableBytes) {
        var sink = ByteBuffer()
        for c in chunks { sink.writeImmutableBuffer(c); if sink.readableBytes > 1 << 20 { sink.clear() } }
    }
    let parsed = try measure("parser, 120 KiB bulk packets", bytes: stream.readableBytes) {
        // The guest role parses what a host sends (bulk IN replies with data).
        var parser = USBRedirParser(role: .guest, capabilities: .all)
        var hello = ByteBuffer()
        try hello.writeUSBRedirPacket(.init(.hello(.init(version: "bench", capabilities: .all))),
                                      negotiation: USBRedirNegotiation(role: .host, ours: .all))
        parser.append(hello)
        _ = try parser.nextPacket()
        var count = 0
        for c in chunks {
            parser.append(c)
            while try parser.nextPacket() != nil { count += 1 }
        }
        precondition(count == packets)
    }
    report(parsed, against: reference)

    let serialized = try measure("serializer, 120 KiB bulk packets", bytes: stream.readableBytes) {
        _ = try bulkStream(packets: packets, data: data)
    }
    report(serialized, against: reference)
}

// --- the system benchmarks (make bench) -------------------------------------

struct BenchConfig {
    var usbredir = "", refhost = "", loadgen = "", guestScript = "", outDir = "out/bench"
    var quick = false
    var skip: Set<String> = []
    var rounds = 5, warmup = 0.15, seconds = 0.5, idleSeconds = 5.0
}

func parseArguments() throws -> BenchConfig {
    var c = BenchConfig()
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        guard let v = args.popFirst() else { throw BenchError("\(a) needs a value") }
        switch a {
        case "--usbredir": c.usbredir = v
        case "--refhost": c.refhost = v
        case "--loadgen": c.loadgen = v
        case "--guest-script": c.guestScript = v
        case "--out": c.outDir = v
        case "--skip": c.skip.formUnion(v.split(separator: ",").map(String.init))
        default: throw BenchError("unknown option \(a)")
        }
    }
    let quick = ProcessInfo.processInfo.environment["BENCH_QUICK"] ?? ""
    c.quick = !quick.isEmpty && quick != "0"
    if c.quick { c.rounds = 2; c.seconds = 0.3; c.idleSeconds = 3 }
    for (name, path) in [("--usbredir", c.usbredir), ("--refhost", c.refhost), ("--loadgen", c.loadgen)]
    where path.isEmpty || !FileManager.default.isExecutableFile(atPath: path) {
        throw BenchError("\(name) \(path.isEmpty ? "is required" : path + " is not an executable") "
                         + "(usage: usbredir-bench --usbredir BIN --refhost BIN --loadgen BIN --guest-script SH "
                         + "[--out DIR] [--skip parser,engine,guest,footprint]; make bench does this)")
    }
    try FileManager.default.createDirectory(atPath: c.outDir, withIntermediateDirectories: true)
    return c
}

let config: BenchConfig
do { config = try parseArguments() } catch {
    FileHandle.standardError.write(Data("usbredir-bench: \(error)\n".utf8))
    exit(64)
}
let started = Date()
print("usbredir-bench\(config.quick ? " (BENCH_QUICK=1: reduced set)" : ""): logs and generated profiles in \(config.outDir)/")

if !config.skip.contains("parser") {
    progress("parser: micro-benchmarks")
    print("")
    print("== parser: best of 5 runs each; ratio = subject / reference")
    try parserBenchmark()
}

var engines: [EngineResults] = []
if !config.skip.contains("engine") {
    for pinning in EnginePinning.allCases {
        do {
            let e = try runEngine(config, pinning: pinning)
            engines.append(e)
            printEngine(e, config: config)
        } catch {
            print("")
            print("== engine (\(pinning.short)): FAILED: \(error)")
        }
    }
}
let engine = engines.first

var footprint: FootprintResults?
if !config.skip.contains("footprint") {
    do { footprint = try runFootprint(config) } catch { print("== footprint: FAILED: \(error)") }
}
printFootprint(footprint, engine: engine)

// The bench VM is on xhci, so the targets judge the stick as fast as a
// profile can make it there (`speed: super`, `uas: true`); the boots at
// super without UAS and at the default (high) show what each step is worth.
var guestBoots: [GuestResults] = []
if !config.skip.contains("guest") {
    if config.guestScript.isEmpty {
        print("== guest view: FAILED: --guest-script is required")
    } else {
        for speed in ["uas", "super", "high"] {
            do { guestBoots.append(try runGuest(config, speed: speed)) } catch { print("== guest view (\(speed)): FAILED: \(error)") }
        }
    }
}
printGuest(guestBoots)

printVerdicts(engines: engines, guest: guestBoots.first { $0.speed == "uas" }, footprint: footprint)
print("")
print("usbredir-bench: done in \(fmt(Date().timeIntervalSince(started), 0)) s")
