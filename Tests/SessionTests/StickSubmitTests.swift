import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import Devices

/// What a completion saw: every result it got (exactly one is right),
/// whether the first came inside `submit` (on the submitting thread while
/// it ran: a completion from the file-I/O pool may come before `submit`
/// returns, on another thread), and a way to wait for the first.
final class CompletionProbe: Sendable {
    private struct State {
        var results: [USBTransferResult] = []
        var noted: [Int] = []
        var waiters: [CheckedContinuation<USBTransferResult, Never>] = []
        var submitter: pthread_t?
        var firstInsideSubmit = false
    }
    private let state = NIOLockedValueBox(State())
    /// Read when the completion runs (e.g. the image's fdatasync count).
    private let note: @Sendable () -> Int

    init(note: @escaping @Sendable () -> Int = { 0 }) { self.note = note }

    func complete(_ r: USBTransferResult) {
        let n = note()
        let me = pthread_self()
        let waiters = state.withLockedValue { s in
            if s.results.isEmpty { s.firstInsideSubmit = s.submitter.map { pthread_equal($0, me) != 0 } ?? false }
            s.results.append(r)
            s.noted.append(n)
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: r) }
    }

    var count: Int { state.withLockedValue { $0.results.count } }
    /// Whether the first result came inside the `submit` between these two calls.
    var firstInsideSubmit: Bool { state.withLockedValue { $0.firstInsideSubmit } }
    func submitting(_ running: Bool) {
        let me = pthread_self()
        state.withLockedValue { $0.submitter = running ? me : nil }
    }
    /// What `note` said when the completion ran.
    var noted: Int? { state.withLockedValue { $0.noted.first } }

    var value: USBTransferResult {
        get async {
            await withCheckedContinuation { c in
                let r = state.withLockedValue { s -> USBTransferResult? in
                    if let r = s.results.first { return r }
                    s.waiters.append(c)
                    return nil
                }
                if let r { c.resume(returning: r) }
            }
        }
    }
}

/// One `submit`: whether its completion ran inside the call (at once).
struct Submitted {
    let probe: CompletionProbe
    let atOnce: Bool
    let handle: (any USBCancellableTransfer)?

    init(_ device: MassStorageDevice, _ request: USBTransferRequest, note: @escaping @Sendable () -> Int = { 0 }) {
        let probe = CompletionProbe(note: note)
        self.probe = probe
        probe.submitting(true)
        handle = device.submit(request) { probe.complete($0) }
        probe.submitting(false)
        atOnce = probe.firstInsideSubmit
    }

    static func bulk(_ device: MassStorageDevice, _ endpoint: UInt8, length: Int, data: ByteBuffer? = nil,
                     streamID: UInt32 = 0, note: @escaping @Sendable () -> Int = { 0 }) -> Submitted {
        Submitted(device, .data(endpoint: endpoint, length: length, data: data, streamID: streamID), note: note)
    }

    var bytes: [UInt8] { get async { byteArray(await probe.value.data) } }
}

/// The rule of `submit` (issue #20): what the stick has in memory it answers
/// inside the call; what waits for image I/O or for another transfer
/// completes later, exactly once, never blocking the caller.
@Suite("StickSubmitTests", .timeLimit(.minutes(1)))
struct StickSubmitTests {
    static let inEP = MassStorageDevice.bulkIn, outEP = MassStorageDevice.bulkOut

    static func csw(tag: UInt8, status: UInt8 = 0) -> [UInt8] { [0x55, 0x53, 0x42, 0x53, tag, 0, 0, 0, 0, 0, 0, 0, status] }

    @Test("CBWs, CSWs, control and read-ahead data inside submit; an image read not read ahead later")
    func memoryAtOnceImageLater() async throws {
        let image = try makeStickImage(blocks: 64, fill: 0xaa)
        let device = try MassStorageDevice(imagePath: image, readOnly: false, serial: "SUBMIT")
        let getMaxLUN = USBSetupPacket(requestType: 0xa1, request: 0xfe, value: 0, index: 0, length: 1)
        let lun = Submitted(device, .control(getMaxLUN, data: nil))
        #expect(lun.atOnce)
        #expect(byteArray(await lun.probe.value.data) == [0])

        let read = StickDriver.cbw(tag: 1, dataLength: 4096, isIn: true, [0x28, 0] + be(0, 4) + [0] + be(8, 2) + [0])
        let cbw = Submitted.bulk(device, Self.outEP, length: 31, data: read)
        #expect(cbw.atOnce && cbw.handle == nil)
        #expect(await cbw.probe.value == .outDone(31))
        // Nothing read ahead yet: the read goes to the pool, the caller goes on.
        let first = Submitted.bulk(device, Self.inEP, length: 1024)
        #expect(!first.atOnce)
        #expect(await first.bytes == [UInt8](repeating: 0xaa, count: 1024))
        #expect(first.probe.count == 1)
        // The next 1024 bytes are read ahead; landed, they are served inside submit.
        try await eventually("the read ahead lands") { device.readAheadLanded }
        let second = Submitted.bulk(device, Self.inEP, length: 1024)
        #expect(second.atOnce)
        #expect(await second.bytes == [UInt8](repeating: 0xaa, count: 1024))
        // More than is read ahead: later again.
        let rest = Submitted.bulk(device, Self.inEP, length: 2048)
        #expect(!rest.atOnce)
        #expect(await rest.bytes == [UInt8](repeating: 0xaa, count: 2048))
        let status = Submitted.bulk(device, Self.inEP, length: 13)
        #expect(status.atOnce)
        #expect(await status.bytes == Self.csw(tag: 1))

        // A completion may submit the next transfer (the stick holds no lock
        // while it runs): TEST UNIT READY's CSW asked from its CBW's completion.
        let tur = StickDriver.cbw(tag: 2, dataLength: 0, isIn: false, [0x00, 0, 0, 0, 0, 0])
        let nested = CompletionProbe()
        let outer = CompletionProbe()
        _ = device.submit(.data(endpoint: Self.outEP, length: 31, data: tur, streamID: 0)) { r in
            outer.complete(r)
            _ = device.submit(.data(endpoint: Self.inEP, length: 13, data: nil, streamID: 0)) { nested.complete($0) }
        }
        #expect(outer.count == 1 && nested.count == 1, "both inside the outer submit")
        #expect(byteArray(await nested.value.data) == Self.csw(tag: 2))
        await device.close()
    }

    @Test("a write's data completes once durable; its CSW, asked meanwhile, waits for it")
    func writeThenCSW() async throws {
        let image = try makeStickImage(blocks: 64)
        let device = try MassStorageDevice(imagePath: image, readOnly: false, serial: "SUBMIT")
        let before = device.imageDataSyncs
        let write = StickDriver.cbw(tag: 5, dataLength: 1024, isIn: false, [0x2a, 0] + be(4, 4) + [0] + be(2, 2) + [0])
        #expect(Submitted.bulk(device, Self.outEP, length: 31, data: write).atOnce)
        let syncs: @Sendable () -> Int = { device.imageDataSyncs }
        let data = Submitted.bulk(device, Self.outEP, length: 1024, data: ByteBuffer(repeating: 0x77, count: 1024),
                                  note: syncs)
        // The guest asks for the CSW before the data OUT has completed (the
        // session may: another endpoint): it must not be answered before the
        // write is durable. (It waits behind the write, unless the pool was
        // quicker than this thread; either way its completion sees the sync.)
        let status = Submitted.bulk(device, Self.inEP, length: 13, note: syncs)
        #expect(!data.atOnce)
        #expect(await data.probe.value == .outDone(1024))
        #expect(await status.bytes == Self.csw(tag: 5))
        #expect(data.probe.noted == before + 1, "the data OUT completed before its fdatasync")
        #expect(status.probe.noted == before + 1, "the CSW came before the write was durable")
        #expect(device.readImage(lba: 4, blocks: 2).map { Array($0.readableBytesView) }
                == [UInt8](repeating: 0x77, count: 1024))

        // SYNCHRONIZE CACHE: its CBW completes after the flush, its CSW then at once.
        let sync = StickDriver.cbw(tag: 6, dataLength: 0, isIn: false, [0x35] + [UInt8](repeating: 0, count: 9))
        let flush = Submitted.bulk(device, Self.outEP, length: 31, data: sync)
        #expect(!flush.atOnce)
        #expect(await flush.probe.value == .outDone(31))
        let flushed = Submitted.bulk(device, Self.inEP, length: 13)
        #expect(flushed.atOnce)
        #expect(await flushed.bytes == Self.csw(tag: 6))
        await device.close()
    }

    @Test("UAS: a Command IU and what it has in memory inside submit; a waiting status cancelled ends once")
    func uasRule() async throws {
        let device = try await StickUASTests.uasStick(blocks: 64, fill: 0x3c)
        let status = MassStorageDevice.uasStatusPipe, dataIn = MassStorageDevice.uasDataInPipe
        let dataOut = MassStorageDevice.uasDataOutPipe, command = MassStorageDevice.uasCommandPipe

        // A status transfer before its command waits; cancelled, it ends once, .cancelled.
        let waiting = Submitted.bulk(device, status, length: 112, streamID: 3)
        #expect(!waiting.atOnce)
        let handle = try #require(waiting.handle)
        handle.cancel()
        #expect(waiting.probe.count == 1)
        #expect(await waiting.probe.value.status == .cancelled)
        handle.cancel()
        // INQUIRY for tag 3: answered from memory, data and status inside submit.
        let inquiry = StickUASTests.commandIU(tag: 3, [0x12, 0, 0, 0, 36, 0])
        let sent = Submitted.bulk(device, command, length: 32, data: inquiry)
        #expect(sent.atOnce)
        #expect(await sent.probe.value == .outDone(32))
        #expect(waiting.probe.count == 1, "a cancelled transfer completed again")
        let inquiryData = Submitted.bulk(device, dataIn, length: 36, streamID: 3)
        #expect(inquiryData.atOnce)
        #expect(await inquiryData.bytes.count == 36)
        let good = Submitted.bulk(device, status, length: 112, streamID: 3)
        #expect(good.atOnce)
        #expect(Array(await good.bytes.prefix(7)) == [3, 0, 0, 3, 0, 0, 0])

        // A READ: its data is read when the command comes; once landed, served at once.
        let read = Submitted.bulk(device, command, length: 32, data: StickUASTests.commandIU(tag: 4, StickUASTests.read10(lba: 0, blocks: 2)))
        #expect(read.atOnce)
        try await eventually("the read lands") { device.imageIOInFlight == 0 }
        let readData = Submitted.bulk(device, dataIn, length: 1024, streamID: 4)
        #expect(readData.atOnce)
        #expect(await readData.bytes == [UInt8](repeating: 0x3c, count: 1024))
        #expect(Submitted.bulk(device, status, length: 112, streamID: 4).atOnce)

        // A WRITE: the data OUT completes when written; the status, waiting, once durable.
        let before = device.imageDataSyncs
        let syncs: @Sendable () -> Int = { device.imageDataSyncs }
        let writeStatus = Submitted.bulk(device, status, length: 112, streamID: 5, note: syncs)
        let writeData = Submitted.bulk(device, dataOut, length: 512, data: ByteBuffer(repeating: 0x99, count: 512),
                                       streamID: 5)
        #expect(!writeStatus.atOnce && !writeData.atOnce)
        let write = StickUASTests.commandIU(tag: 5, [0x2a, 0] + be(8, 4) + [0] + be(1, 2) + [0])
        #expect(Submitted.bulk(device, command, length: 32, data: write).atOnce)
        #expect(await writeData.probe.value == .outDone(512))
        #expect(Array((await writeStatus.bytes).prefix(7)) == [3, 0, 0, 5, 0, 0, 0])
        #expect(writeStatus.probe.noted == before + 1, "GOOD before the write was durable")
        #expect(writeStatus.probe.count == 1 && writeData.probe.count == 1)
        await device.close()
    }
}
