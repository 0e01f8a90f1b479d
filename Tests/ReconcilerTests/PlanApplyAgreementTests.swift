#if canImport(Glibc)
import Glibc
#endif
import Devices
import Foundation
import Logging
import NIOCore
import Profile
import Reconciler
import Testing
import TestSupport
import USBRedirProtocol

/// A monitor with a fixed set of present devices (a Swift double beside the
/// umockdev tests of LibUSBTests); opening one gives a source-sink device.
struct FixedDevicesMonitor: USBDeviceMonitor {
    let devices: [USBDeviceInfo]
    func presentDevices() async throws -> [USBDeviceInfo] { devices }
    func events() -> AsyncStream<USBDeviceEvent> { AsyncStream { _ in } }
    func open(_ info: USBDeviceInfo) async throws -> any USBDevice { SourceSinkDevice(serial: info.serial ?? "") }
}

/// `text` written to a profile file of its own and loaded; it must be valid.
func loadValidProfile(_ text: String) throws -> Profile {
    let url = try makeTemporaryDirectory("usbredir-plan").appendingPathComponent("lab.yaml")
    try text.write(to: url, atomically: true, encoding: .utf8)
    let result = ProfileLoader.load(path: url.path, hostname: "nohost")
    #expect(result.errors.isEmpty, "\(result.errors)")
    return try #require(result.profile)
}

func device(_ product: UInt16, serial: String, port: String, address: Int) -> USBDeviceInfo {
    USBDeviceInfo(vendorID: 0x1234, productID: product, deviceClass: 0, serial: serial, manufacturer: nil,
                  productName: nil, bus: 1, port: port, address: address, speed: .high)
}

/// One truth for plan and apply (issue 12): the same devices, and "update"
/// only where an assignment's own desired state changed.
@Suite(.serialized, .timeLimit(.minutes(1))) struct PlanApplyAgreementTests {
    let present = [device(1, serial: "A", port: "1-1", address: 2), device(2, serial: "B", port: "1-2", address: 3)]

    func load(_ text: String) throws -> Profile { try loadValidProfile(text) }

    func profile(ports: [Int], bySerialFirst: Bool, vendorLog: String? = nil) -> String {
        let bySerial = "  - {name: by-serial, to: e0, match: {serial: \"A\"}}\n"
        let byVendor = "  - {name: by-vendor, to: e1, match: {vendor: 0x1234}\(vendorLog.map { ", log: \($0)" } ?? "")}\n"
        return "version: 1\nendpoints:\n  e0: {listen: 127.0.0.1:\(ports[0])}\n  e1: {listen: 127.0.0.1:\(ports[1])}\n"
            + "devices:\n" + (bySerialFirst ? bySerial : "") + byVendor
    }

    func devices(_ plan: Plan) -> [String: String] {
        Dictionary(uniqueKeysWithValues: plan.assignments.map { ($0.name, $0.device ?? "none") })
    }

    func devices(_ sessions: [AssignmentStatus]) -> [String: String] {
        Dictionary(uniqueKeysWithValues: sessions.map { ($0.name, $0.device ?? "none") })
    }

    @Test func planShowsTheDevicesApplyKeepsWithOverlappingRulesAndABoundDevice() async throws {
        let ports = [freeLoopbackPort(), freeLoopbackPort()]
        let reconciler = Reconciler(monitor: FixedDevicesMonitor(devices: present), environment: [:],
                                    logger: Logger(label: "test"))
        // First only the vendor rule: it takes the first device, 1-1 (serial A).
        await reconciler.apply(try load(profile(ports: ports, bySerialFirst: false)))
        #expect(devices(await reconciler.status()) == ["by-vendor": "1234:0001@1-1"])
        // Then a serial rule for that same device, earlier in the file. The
        // bound device stays where it is, so by-serial gets none.
        let edited = try load(profile(ports: ports, bySerialFirst: true))
        let plan = Plan.make(edited, present: present, running: await reconciler.report())
        await reconciler.apply(edited)
        let applied = devices(await reconciler.status())
        #expect(applied == ["by-vendor": "1234:0001@1-1", "by-serial": "none"])
        #expect(devices(plan) == applied)
        await reconciler.shutdown()
    }

    @Test func aLogLevelEditKeepsTheSessionAndPlanMarksOnlyThatAssignment() async throws {
        let ports = [freeLoopbackPort(), freeLoopbackPort()]
        let reconciler = Reconciler(monitor: FixedDevicesMonitor(devices: present), environment: [:],
                                    logger: Logger(label: "test"))
        await reconciler.apply(try load(profile(ports: ports, bySerialFirst: true)))
        // A peer connected to by-vendor's listen endpoint: a restart would close it.
        var peer: Int32 = -1
        try await waitFor("by-vendor's listener", timeout: 10) {
            peer = (try? connectLoopback(port: ports[1])) ?? -1
            return peer >= 0
        }
        defer { close(peer) }
        try await waitFor("the peer to connect", timeout: 10) { await reconciler.status().first { $0.name == "by-vendor" }?.state == .connected }
        // A stream of bulk INs through the session, before and after the edit.
        var guest = RawGuest(fd: peer)
        try guest.hello()
        for id in 1...20 { #expect(try guest.bulkIn(length: 4096, id: UInt64(id)) == 4096) }
        let before = try #require(await reconciler.status().first { $0.name == "by-vendor" })

        let edited = try load(profile(ports: ports, bySerialFirst: true, vendorLog: "debug"))
        let plan = Plan.make(edited, present: present, running: await reconciler.report())
        #expect(Dictionary(uniqueKeysWithValues: plan.assignments.map { ($0.name, $0.action) })
                == ["by-serial": .keep, "by-vendor": .update])
        #expect(!plan.upToDate)

        await reconciler.apply(edited)
        let after = try #require(await reconciler.status().first { $0.name == "by-vendor" })
        #expect(after.state == .connected && after.since == before.since, "the session was restarted: \(after)")
        for id in 21...40 { #expect(try guest.bulkIn(length: 4096, id: UInt64(id)) == 4096, "the stream broke at \(id)") }
        let replanned = Plan.make(edited, present: present, running: await reconciler.report())
        #expect(replanned.upToDate && replanned.assignments.allSatisfy { $0.action == .keep })
        await reconciler.shutdown()
    }
}

/// A TCP connection to 127.0.0.1:port.
func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
    return fd
}

/// A minimal blocking usb-guest over a socket, for a stream of transfers
/// through a running session (SessionTests has the full GuestPeer).
struct RawGuest {
    let fd: Int32
    var parser = USBRedirParser(role: .guest, capabilities: .none)

    mutating func send(_ message: USBRedirMessage, id: UInt64 = 0) throws {
        var b = ByteBuffer()
        try b.writeUSBRedirPacket(USBRedirPacket(id: id, message), negotiation: parser.negotiation)
        let bytes = Array(b.readableBytesView)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw POSIXError(.EPIPE) }
    }

    /// The next packet from the host, waiting at most 5 s for bytes.
    mutating func next() throws -> USBRedirPacket {
        while true {
            if let packet = try parser.nextPacket() { return packet }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5_000) == 1 else { throw POSIXError(.ETIMEDOUT) }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw POSIXError(.ECONNRESET) }
            parser.append(chunk.prefix(n))
        }
    }

    mutating func hello() throws {
        try send(.hello(.init(version: "raw test guest", capabilities: .none)))
        while case let p = try next(), p.message.type != .deviceConnect {}
    }

    /// A bulk IN on 0x81; the bytes received (checked against source-sink's pattern).
    mutating func bulkIn(length: UInt32, id: UInt64) throws -> Int {
        try send(.bulkPacket(.init(endpoint: 0x81, status: 0, length: length, streamID: 0)), id: id)
        while true {
            let p = try next()
            guard p.id == id, case .bulkPacket(let reply) = p.message else { continue }
            guard reply.status == 0, let data = reply.data,
                  data.readableBytesView.enumerated().allSatisfy({ $0.element == UInt8($0.offset % 63) }) else { return -1 }
            return data.readableBytes
        }
    }
}

