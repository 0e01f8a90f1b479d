import Devices
import Foundation
import Logging
import NIOConcurrencyHelpers
import Session
import Testing
import USBRedirProtocol

/// Keeps every line logged through it.
struct CapturingLogHandler: LogHandler {
    let lines: NIOLockedValueBox<[String]>
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        lines.withLockedValue { $0.append(([event.message.description] + fields).joined(separator: " ")) }
    }
}

/// At trace level a session logs each packet both ways (issue 19: "nothing a
/// person could debug a device with"), and no more than its rate allows.
@Suite("PacketTraceTests", .timeLimit(.minutes(1)))
struct PacketTraceTests {
    static func rig(level: Logger.Level) async throws -> (Rig, NIOLockedValueBox<[String]>) {
        let lines = NIOLockedValueBox<[String]>([])
        let logger = Logger(label: "trace-test") { _ in CapturingLogHandler(lines: lines, logLevel: level) }
        let session = RedirectionSession(name: "traced", logger: logger)
        try await session.plug(SourceSinkDevice(serial: "SS-TRACE"))
        let peer = GuestPeer(name: "traced", capabilities: .all)
        let rig = Rig(session: session, peer: peer, run: peer.serve(session))
        _ = try await peer.connect()
        return (rig, lines)
    }

    @Test func traceShowsEachPacketWithEndpointIDLengthAndStatus() async throws {
        let (rig, lines) = try await Self.rig(level: .trace)
        _ = try await rig.peer.bulkIn(endpoint: 0x81, length: 512, id: 77)
        let traced = lines.withLockedValue { $0 }
        #expect(traced.contains { $0.hasPrefix("from VM bulkPacket") && $0.contains("ep=0x81") && $0.contains("id=77")
                && $0.contains("length=512") })
        #expect(traced.contains { $0.hasPrefix("to VM bulkPacket") && $0.contains("ep=0x81") && $0.contains("id=77")
                && $0.contains("length=512") && $0.contains("status=0") })
        #expect(traced.contains { $0.hasPrefix("to VM deviceConnect") })
        try await rig.finish()
    }

    @Test func traceIsRateLimitedAndCountsWhatItLeftOut() async throws {
        let (rig, lines) = try await Self.rig(level: .trace)
        let count = 3000
        try await rig.peer.sendAll((0..<count).map {
            (.bulkPacket(.init(endpoint: 0x81, status: 0, length: 8, streamID: 0)), id: UInt64($0 + 1))
        })
        _ = try await rig.peer.bulkReply(id: UInt64(count), timeout: 20)
        let packetLines = lines.withLockedValue { $0.filter { $0.contains("bulkPacket") } }
        #expect(packetLines.count < count, "every one of \(2 * count) packets was traced")
        #expect(packetLines.count >= 100, "the first packets were not traced")
        // A later line says how many were left out.
        try await Task.sleep(nanoseconds: 100_000_000)
        _ = try await rig.peer.bulkIn(endpoint: 0x81, length: 8, id: 999_999)
        #expect(lines.withLockedValue { $0 }.contains { $0.contains("untraced=") })
        try await rig.finish()
    }

    @Test func belowTraceNothingPerPacketIsLogged() async throws {
        let (rig, lines) = try await Self.rig(level: .debug)
        _ = try await rig.peer.bulkIn(endpoint: 0x81, length: 512, id: 5)
        #expect(!lines.withLockedValue { $0 }.contains { $0.contains("bulkPacket") })
        try await rig.finish()
    }
}
