import Devices
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The stick's UAS side (issue #9): alternate setting 1 with four pipes and
/// bulk streams. As a Linux host does, status and data transfers are queued
/// (stream = tag) before their Command IU, several commands at once.
@Suite("StickUASTests", .timeLimit(.minutes(1)))
struct StickUASTests {
    static let command = MassStorageDevice.uasCommandPipe, status = MassStorageDevice.uasStatusPipe
    static let dataIn = MassStorageDevice.uasDataInPipe, dataOut = MassStorageDevice.uasDataOutPipe

    static func uasStick(blocks: Int = 64, fill: UInt8 = 0, readOnly: Bool = false) async throws -> MassStorageDevice {
        let image = try makeStickImage(blocks: blocks, fill: fill)
        let device = try MassStorageDevice(imagePath: image, readOnly: readOnly, serial: "UAS0001", superSpeed: true,
                                           offersUAS: true)
        #expect(await device.setAltSetting(interface: 0, alt: 1) == .success)
        #expect(await device.allocateStreams(endpoints: [status, dataIn, dataOut], count: 32) == .success)
        return device
    }

    /// A Command IU: id 1, tag, LUN 0, the CDB padded to 16 bytes.
    static func commandIU(tag: UInt16, _ cdb: [UInt8]) -> ByteBuffer {
        ByteBuffer(bytes: [1, 0, UInt8(tag >> 8), UInt8(tag & 0xff), 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
                   + cdb + [UInt8](repeating: 0, count: 16 - cdb.count))
    }

    static func read10(lba: UInt64, blocks: Int) -> [UInt8] { [0x28, 0] + be(lba, 4) + [0] + be(UInt64(blocks), 2) + [0] }

    static func send(_ device: MassStorageDevice, _ iu: ByteBuffer) async -> USBTransferResult {
        await device.transfer(endpoint: command, length: iu.readableBytes, data: iu, streamID: 0)
    }

    static func bytes(_ r: USBTransferResult) -> [UInt8] { r.data.map { Array($0.readableBytesView) } ?? [] }

    @Test("the configuration offers Bulk-Only at alt 0 and UAS at alt 1, with pipe usage and streams")
    func descriptors() async throws {
        let device = try await Self.uasStick()
        let setup = USBSetupPacket(requestType: 0x80, request: 6, value: 0x0200, index: 0, length: 512)
        let config = Self.bytes(await device.control(setup, data: nil))
        // Alt 1: class 8, subclass 6, protocol 0x62 (UAS), four endpoints.
        let alt1 = try #require(config.indices.first { config[$0] == 9 && config[$0 + 1] == 4 && config[$0 + 3] == 1 })
        #expect(Array(config[(alt1 + 4)...(alt1 + 7)]) == [4, 0x08, 0x06, 0x62])
        // Each UAS endpoint: endpoint, SuperSpeed companion (32 streams on
        // the streamed ones: 2^5), then its pipe usage descriptor.
        let status = try #require(config.indices.first { config[$0] == 7 && config[$0 + 1] == 5 && config[$0 + 2] == 0x83 })
        #expect(Array(config[status + 7..<status + 17]) == [6, 48, 15, 5, 0, 0, 4, 0x24, 2, 0])
        let alt0 = try #require(config.indices.first { config[$0] == 9 && config[$0 + 1] == 4 && config[$0 + 3] == 0 })
        #expect(config[alt0 + 7] == 0x50)
    }

    @Test("data and status queued before their commands: each gets its own command's bytes, then GOOD")
    func queuedCommands() async throws {
        let device = try await Self.uasStick(blocks: 64)
        // Distinct bytes per block: block k holds k.
        let image = device.imagePath
        try Data((0..<64).flatMap { [UInt8](repeating: UInt8($0), count: 512) })
            .write(to: URL(fileURLWithPath: image))
        // Tags 1-4 (blocks 4k..4k+3), data and status asked first, in reverse order.
        var results: [UInt16: (data: USBTransferResult, status: USBTransferResult)] = [:]
        try await withThrowingTaskGroup(of: (UInt16, USBTransferResult, USBTransferResult).self) { group in
            for tag in [UInt16(4), 3, 2, 1] {
                group.addTask {
                    async let data = device.transfer(endpoint: Self.dataIn, length: 2048, data: nil, streamID: UInt32(tag))
                    async let status = device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: UInt32(tag))
                    return (tag, await data, await status)
                }
            }
            try await Task.sleep(nanoseconds: 50_000_000)   // the transfers wait; then the commands come
            for tag in [UInt16(1), 2, 3, 4] {
                let sent = await Self.send(device, Self.commandIU(tag: tag, Self.read10(lba: 4 * UInt64(tag - 1), blocks: 4)))
                #expect(sent == .outDone(32))
            }
            for try await (tag, data, status) in group { results[tag] = (data, status) }
        }
        for tag in [UInt16(1), 2, 3, 4] {
            let r = try #require(results[tag])
            let first = 4 * UInt8(tag - 1)
            let expected: [UInt8] = (first..<first + 4).flatMap { [UInt8](repeating: $0, count: 512) }
            #expect(Self.bytes(r.data) == expected, "tag \(tag)")
            // Sense IU: id 3, the tag, status GOOD, no sense data.
            let good: [UInt8] = [3, 0, 0, UInt8(tag), 0, 0, 0] + [UInt8](repeating: 0, count: 9)
            #expect(Self.bytes(r.status) == good, "tag \(tag)")
        }
        await device.close()
    }

    @Test("a failed command's status carries CHECK CONDITION and the sense; its data transfer gets nothing")
    func failedCommand() async throws {
        let device = try await Self.uasStick(blocks: 16)
        // Queued in this order before the command, as a host does (two
        // `async let`s may reach the stick in either order, or after the
        // command: a status taken first would leave the data transfer
        // waiting for a command that has come and gone).
        let results = NIOLockedValueBox<[UInt8: USBTransferResult]>([:])
        for pipe in [Self.dataIn, Self.status] {
            _ = device.submit(.data(endpoint: pipe, length: pipe == Self.dataIn ? 4096 : 112, data: nil, streamID: 7)) { r in
                results.withLockedValue { $0[pipe] = r }
            }
        }
        _ = await Self.send(device, Self.commandIU(tag: 7, Self.read10(lba: 100, blocks: 8)))   // past the end
        try await eventually("both transfers ended") { results.withLockedValue { $0.count } == 2 }
        #expect(Self.bytes(results.withLockedValue { $0[Self.dataIn] } ?? .failed(.invalid)).isEmpty)
        let sense = Self.bytes(results.withLockedValue { $0[Self.status] } ?? .failed(.invalid))
        #expect(Array(sense.prefix(7)) == [3, 0, 0, 7, 0, 0, 2])
        #expect(Array(sense[14..<16]) == [0, 18] && sense[18] == 0x05 && sense[28] == 0x21, "\(sense)")
        await device.close()
    }

    @Test("a write's data may come before its command; it reaches the image, then GOOD")
    func writeBeforeCommand() async throws {
        let device = try await Self.uasStick(blocks: 16)
        let payload = ByteBuffer(bytes: [UInt8](repeating: 0x5a, count: 1024))
        async let written = device.transfer(endpoint: Self.dataOut, length: 1024, data: payload, streamID: 2)
        async let status = device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: 2)
        try await Task.sleep(nanoseconds: 20_000_000)
        _ = await Self.send(device, Self.commandIU(tag: 2, [0x2a, 0] + be(3, 4) + [0] + be(2, 2) + [0]))
        #expect(await written == .outDone(1024))
        #expect(Array(Self.bytes(await status).prefix(7)) == [3, 0, 0, 2, 0, 0, 0])
        let image = try Data(contentsOf: URL(fileURLWithPath: device.imagePath))
        #expect(Array(image[1536..<2560]) == [UInt8](repeating: 0x5a, count: 1024))
        #expect(image[2560] == 0)
        await device.close()
    }

    @Test("a transfer waiting for its command ends cancelled when its task is cancelled, or on a reset")
    func waitsEnd() async throws {
        let device = try await Self.uasStick()
        let waiting = Task { await device.transfer(endpoint: Self.dataIn, length: 512, data: nil, streamID: 9) }
        try await Task.sleep(nanoseconds: 20_000_000)
        waiting.cancel()
        #expect(await waiting.value.status == .cancelled)
        let other = Task { await device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: 10) }
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(await device.reset() == .success)
        #expect(await other.value.status == .cancelled)
        await device.close()
    }

    @Test("after close a UAS transfer ends at once (found by the stick fuzzer: it waited for ever)")
    func closedStickAnswersAtOnce() async throws {
        let device = try await Self.uasStick()
        await device.close()
        for pipe in [Self.status, Self.dataIn, Self.dataOut] {
            let r = try await within(2, "a UAS transfer on a closed stick") {
                await device.transfer(endpoint: pipe, length: 512, data: ByteBuffer(bytes: [1]), streamID: 1)
            }
            #expect(r.status == .noDevice)
        }
        #expect(await Self.send(device, Self.commandIU(tag: 1, Self.read10(lba: 0, blocks: 1))).status == .noDevice)
        // Opened again, it serves commands as before.
        try await device.open()
        #expect(await Self.send(device, Self.commandIU(tag: 1, Self.read10(lba: 0, blocks: 1))) == .outDone(32))
        #expect(await device.transfer(endpoint: Self.dataIn, length: 512, data: nil, streamID: 1).data?.readableBytes == 512)
        await device.close()
    }

    @Test("without UAS (or at high speed) there is no alt 1 and the UAS pipes stall")
    func offeredOnlyWhenAsked() async throws {
        let image = try makeStickImage(blocks: 16, fill: 0)
        for (superSpeed, uas) in [(true, false), (false, true)] {
            let device = try MassStorageDevice(imagePath: image, readOnly: true, serial: "NOUAS", superSpeed: superSpeed,
                                               offersUAS: uas)
            #expect(await device.setAltSetting(interface: 0, alt: 1) == .stall)
            #expect(await Self.send(device, Self.commandIU(tag: 1, [0])).status == .stall)
            await device.close()
        }
    }

    /// A Task Management IU: id 5, tag, function, the task it names, LUN 0.
    static func taskManagementIU(tag: UInt16, function: UInt8, taskTag: UInt16 = 0) -> ByteBuffer {
        ByteBuffer(bytes: [5, 0, UInt8(tag >> 8), UInt8(tag & 0xff), function, 0, UInt8(taskTag >> 8), UInt8(taskTag & 0xff)]
                   + [UInt8](repeating: 0, count: 8))
    }

    @Test("a reset by task management still answers its own Response IU (issue 20), and ends the others")
    func resetKeepsItsResponse() async throws {
        let device = try await Self.uasStick()
        for function: UInt8 in [0x02, 0x04, 0x08, 0x10] {   // ABORT TASK SET, CLEAR TASK SET, LU RESET, I_T NEXUS RESET
            let tag = UInt16(20 + function)
            // Linux queues the status read of the TM IU before sending it, beside a command's.
            let other = Task { await device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: 3) }
            let own = Task { await device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: UInt32(tag)) }
            try await Task.sleep(nanoseconds: 20_000_000)
            #expect(await Self.send(device, Self.taskManagementIU(tag: tag, function: function)) == .outDone(16))
            let response = try await within(2, "the Response IU of function \(function)") { await own.value }
            // Response IU: id 4, the tag, code 0 (function complete).
            #expect(Self.bytes(response) == [4, 0, UInt8(tag >> 8), UInt8(tag & 0xff), 0, 0, 0, 0], "function \(function)")
            #expect(await other.value.status == .cancelled, "function \(function)")
        }
        await device.close()
    }

    @Test("an unknown task management function is answered 'not supported' (issue 20)")
    func unknownFunctionNotSupported() async throws {
        let device = try await Self.uasStick()
        for function: UInt8 in [0x40, 0x80, 0x81, 0x82, 0x33] {   // CLEAR ACA, the QUERYs, an undefined one
            let tag = UInt16(function) + 100
            let own = Task { await device.transfer(endpoint: Self.status, length: 112, data: nil, streamID: UInt32(tag)) }
            try await Task.sleep(nanoseconds: 10_000_000)
            _ = await Self.send(device, Self.taskManagementIU(tag: tag, function: function))
            let response = try await within(2, "the Response IU") { await own.value }
            #expect(Self.bytes(response) == [4, 0, UInt8(tag >> 8), UInt8(tag & 0xff), 0, 0, 0, 0x04], "function \(function)")
        }
        await device.close()
    }

    @Test("alloc_bulk_streams is bounded by the streams the endpoints declare (issue 20)")
    func streamAllocationIsBounded() async throws {
        let device = try await Self.uasStick()
        for count: UInt32 in [33, 1024, 65_536, .max] {
            #expect(await device.allocateStreams(endpoints: [Self.status, Self.dataIn, Self.dataOut], count: count) == .invalid,
                    "\(count) streams")
        }
        #expect(await device.allocateStreams(endpoints: [Self.status, Self.dataIn, Self.dataOut], count: 32) == .success)
        #expect(await device.allocateStreams(endpoints: [Self.status], count: 2) == .success)
        await device.close()
    }
}
