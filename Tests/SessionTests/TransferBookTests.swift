@testable import Devices
import NIOCore
@testable import Session
import Testing
import USBRedirProtocol

/// The transfer book on its own: events in, actions out, no device, no
/// socket, no engine. Each test plays the engine's part by hand.
@Suite("TransferBookTests")
struct TransferBookTests {
    static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02, isoOut: UInt8 = 0x03
    static let ok = USBRedirStatus.success.rawValue
    static let cancelled = USBRedirStatus.cancelled.rawValue
    static let invalid = USBRedirStatus.invalid.rawValue

    /// What an action did, in terms a test compares.
    enum Step: Equatable {
        case start(id: UInt64)
        case cancel(id: UInt64)
        case finished
        case reply(id: UInt64, status: UInt8)
        case release(bytes: Int)
    }

    /// A book, the device its jobs name, and the jobs it started (for
    /// completing them), oldest first. A class, so `#expect` can call it.
    final class Desk {
        var book: TransferBook
        let device: PaperDevice
        var started: [TransferJob] = []

        init(queues: Bool, maxTransfers: Int = 64, maxBytes: Int = 1 << 20) {
            book = TransferBook(maxTransfers: maxTransfers, maxBytes: maxBytes)
            device = PaperDevice(queuesTransfers: queues)
        }

        /// Takes every action the book queued, as steps.
        func steps() -> [Step] {
            var steps: [Step] = []
            while let action = book.nextAction() {
                switch action {
                case .start(let job, _):
                    started.append(job)
                    steps.append(.start(id: job.id))
                case .cancel(let serial):
                    steps.append(.cancel(id: started.first { $0.serial == serial }?.id ?? .max))
                case .finished:
                    steps.append(.finished)
                case .reply(let r):
                    steps.append(.reply(id: r.packetID, status: TransferBookTests.status(r.message)))
                case .release(let p):
                    steps.append(.release(bytes: p.bytes))
                }
            }
            return steps
        }

        /// Takes room for `bytes` and admits the transfer.
        func admit(_ id: UInt64, _ kind: TransferJob.Kind, bytes: Int = 8) -> [Step] {
            let permit = book.take(bytes)
            book.admit(id: id, kind: kind, device: device, permit: permit)
            return steps()
        }

        /// The newest started job with packet id `id`.
        func job(_ id: UInt64) -> TransferJob {
            started.last { $0.id == id }!
        }

        func complete(_ job: TransferJob, _ result: USBTransferResult = .outDone(8)) -> [Step] {
            book.deviceCompleted(job, result)
            return steps()
        }

        /// What the engine does with a `.release`.
        func release(_ permit: InFlightBudget.Permit) -> Bool {
            book.release(permit)
        }

        func cancel(_ id: UInt64) -> [Step] {
            book.cancel(packetID: id)
            return steps()
        }
    }

    static func bulk(_ endpoint: UInt8, length: UInt32 = 8, stream: UInt32 = 0) -> TransferJob.Kind {
        .bulk(.init(endpoint: endpoint, status: 0, length: length, streamID: stream,
                    data: endpoint & 0x80 == 0 ? ByteBuffer(repeating: 1, count: Int(length)) : nil))
    }

    static func control(in isIn: Bool, requestType: UInt8) -> TransferJob.Kind {
        .control(.init(endpoint: isIn ? 0x80 : 0x00, request: 1, requestType: requestType, status: 0,
                       value: 0, index: 0, length: 0, data: nil))
    }

    static func status(_ message: USBRedirMessage) -> UInt8 {
        switch message {
        case .controlPacket(let p): p.status
        case .bulkPacket(let p): p.status
        case .interruptPacket(let p): p.status
        default: .max
        }
    }

    @Test func repliesOfOneEndpointLeaveInArrivalOrderWhateverTheDeviceDoes() {
        let desk = Desk(queues: true)
        for id: UInt64 in 1...3 {
            #expect(desk.admit(id, Self.bulk(Self.bulkIn)) == [.start(id: id)])
        }
        let (one, two, three) = (desk.job(1), desk.job(2), desk.job(3))
        #expect(desk.complete(three, .inData(ByteBuffer(bytes: [3]))) == [.finished], "3 waits for 1 and 2")
        #expect(desk.complete(one, .inData(ByteBuffer(bytes: [1]))) == [.finished, .reply(id: 1, status: Self.ok)])
        #expect(desk.complete(two, .inData(ByteBuffer(bytes: [2]))) == [
            .finished, .reply(id: 2, status: Self.ok), .reply(id: 3, status: Self.ok),
        ])
        #expect(desk.book.transfersInFlight == 0)
    }

    @Test func aCancelledQueuedJobIsAnsweredOnceAndTheNextQueuedJobStarts() {
        let desk = Desk(queues: false)
        #expect(desk.admit(1, Self.bulk(Self.bulkOut)) == [.start(id: 1)])
        #expect(desk.admit(2, Self.bulk(Self.bulkOut)) == [], "behind 1 on its lane")
        #expect(desk.admit(3, Self.bulk(Self.bulkOut)) == [])
        #expect(desk.cancel(2) == [], "not on the device: nothing to cancel there")
        #expect(desk.cancel(2) == [], "already cancelled")
        #expect(desk.complete(desk.job(1)) == [
            .finished, .reply(id: 1, status: Self.ok),
            .finished, .reply(id: 2, status: Self.cancelled),
            .start(id: 3),
        ])
        #expect(desk.complete(desk.job(3)) == [.finished, .reply(id: 3, status: Self.ok)])
        #expect(desk.started.map(\.id) == [1, 3], "2 never reached the device")
        #expect(desk.cancel(2) == [], "answered: nothing in flight with that id")
        #expect(desk.book.transfersInFlight == 0)
    }

    @Test func cancellingTheRunningJobCancelsItOnTheDevice() {
        let desk = Desk(queues: false)
        _ = desk.admit(1, Self.bulk(Self.bulkIn))
        _ = desk.admit(2, Self.bulk(Self.bulkIn))
        #expect(desk.cancel(1) == [.cancel(id: 1)])
        #expect(desk.complete(desk.job(1), .failed(.cancelled)) == [
            .finished, .reply(id: 1, status: Self.cancelled), .start(id: 2),
        ])
    }

    @Test func aPacketIDReusedAfterACancelIsANewTransferWithItsOwnReply() {
        let desk = Desk(queues: true)
        #expect(desk.admit(7, Self.bulk(Self.bulkOut)) == [.start(id: 7)])
        let first = desk.job(7)
        #expect(desk.cancel(7) == [.cancel(id: 7)])
        #expect(desk.admit(7, Self.bulk(Self.bulkOut)) == [.start(id: 7)], "a new transfer, on the device too")
        let second = desk.job(7)
        #expect(first.serial != second.serial)
        #expect(desk.complete(second) == [.finished], "the cancelled one answers first")
        #expect(desk.complete(first, .failed(.cancelled)) == [
            .finished, .reply(id: 7, status: Self.cancelled), .reply(id: 7, status: Self.ok),
        ])
        // A cancel now finds nothing: both are answered.
        #expect(desk.cancel(7) == [])
    }

    @Test func aCancelMeansTheOldestTransferWithThatIDNotCancelledYet() {
        let desk = Desk(queues: true)
        _ = desk.admit(7, Self.bulk(Self.bulkOut))
        let first = desk.job(7)
        _ = desk.cancel(7)
        _ = desk.admit(7, Self.bulk(Self.bulkOut))
        let second = desk.job(7)
        desk.book.cancel(packetID: 7)
        guard case .cancel(let serial)? = desk.book.nextAction() else {
            Issue.record("no cancel")
            return
        }
        #expect(serial == second.serial && serial != first.serial)
    }

    @Test func aStaleCompletionIsDroppedAndItsPermitReleased() throws {
        let desk = Desk(queues: true, maxTransfers: 1)
        #expect(desk.admit(1, Self.bulk(Self.bulkIn), bytes: 64) == [.start(id: 1)])
        #expect(!desk.book.admits(1), "one transfer in flight fills the budget")
        desk.book.newDevice()
        #expect(desk.complete(desk.job(1), .inData(ByteBuffer(bytes: [1]))) == [.release(bytes: 64)], "no reply")
        #expect(desk.book.transfersInFlight == 0)
        // The engine gives the permit back: room again.
        let permit = try #require(desk.job(1).permit)
        #expect(desk.release(permit))
        #expect(desk.book.admits(1))

        // After a reset the permit was forgotten already: releasing it is ignored.
        #expect(desk.admit(2, Self.bulk(Self.bulkIn), bytes: 64) == [.start(id: 2)])
        desk.book.reset()
        #expect(desk.book.transfersInFlight == 0)
        #expect(desk.complete(desk.job(2), .inData(ByteBuffer(bytes: [1]))) == [.release(bytes: 64)])
        #expect(!desk.release(desk.job(2).permit!))
        #expect(desk.book.admits(1))
    }

    @Test func theBudgetBoundsTransfersAndBytesAndLetsOneOversizedTransferThroughAlone() {
        var book = TransferBook(maxTransfers: 2, maxBytes: 100)
        #expect(book.admits(10))
        let a = book.take(10)
        #expect(book.admits(90))
        #expect(!book.admits(91), "bytes")
        let b = book.take(10)
        #expect(!book.admits(1), "transfers")
        let releasedB = book.release(b)
        #expect(releasedB)
        #expect(book.admits(90) && !book.admits(91))
        let releasedA = book.release(a)
        #expect(releasedA)

        // Alone, a transfer larger than the byte bound gets through...
        #expect(book.admits(1000))
        let big = book.take(1000)
        // ...and nothing joins it until it is back.
        #expect(!book.admits(1))
        let releasedBig = book.release(big)
        #expect(releasedBig)
        #expect(book.admits(100))
    }

    @Test func bulkStreamsAndIsoOutDoNotWaitForTheirEndpointsOrder() {
        let desk = Desk(queues: true)
        #expect(desk.admit(1, Self.bulk(Self.bulkOut, stream: 1)) == [.start(id: 1)])
        #expect(desk.admit(2, Self.bulk(Self.bulkOut, stream: 2)) == [.start(id: 2)])
        #expect(desk.complete(desk.job(2)) == [.finished, .reply(id: 2, status: Self.ok)], "stream 2 need not wait for 1")
        #expect(desk.complete(desk.job(1)) == [.finished, .reply(id: 1, status: Self.ok)])

        let iso = TransferJob.Kind.isoOut(.init(endpoint: Self.isoOut, status: 0, length: 4,
                                                data: ByteBuffer(bytes: [1, 2, 3, 4])))
        #expect(desk.admit(3, iso, bytes: 4) == [.start(id: 3)])
        #expect(desk.admit(4, iso, bytes: 4) == [.start(id: 4)])
        // No reply, and its permit back at once, though 3 is still on the device.
        #expect(desk.complete(desk.job(4), .outDone(4)) == [.finished, .release(bytes: 4)])
        #expect(desk.complete(desk.job(3), .outDone(4)) == [.finished, .release(bytes: 4)])
    }

    @Test func anInvalidControlSetupIsAnsweredWithoutTheDeviceAndTheControlLaneGoesOn() {
        let desk = Desk(queues: false)
        #expect(desk.admit(1, Self.control(in: true, requestType: 0xc0)) == [.start(id: 1)])
        // IN endpoint, OUT request type: invalid, behind 1 on the control lane.
        #expect(desk.admit(2, Self.control(in: true, requestType: 0x40)) == [])
        #expect(desk.admit(3, Self.control(in: false, requestType: 0x40)) == [])
        #expect(desk.complete(desk.job(1), .inData(ByteBuffer())) == [
            .finished, .reply(id: 1, status: Self.ok),
            .finished, .reply(id: 2, status: Self.invalid),
            .start(id: 3),
        ])
        #expect(desk.started.map(\.id) == [1, 3])
    }

    @Test func aTooLongTransferIsAnsweredInvalidInItsEndpointsOrder() {
        let desk = Desk(queues: true)
        #expect(desk.admit(1, Self.bulk(Self.bulkIn)) == [.start(id: 1)])
        desk.book.refuse(id: 2, kind: Self.bulk(Self.bulkIn, length: 1 << 30), device: desk.device)
        #expect(desk.steps() == [.finished], "after 1")
        #expect(desk.complete(desk.job(1), .inData(ByteBuffer())) == [
            .finished, .reply(id: 1, status: Self.ok), .reply(id: 2, status: Self.invalid),
        ])
        #expect(desk.started.map(\.id) == [1])
    }
}

/// A device for the book's jobs: the book never calls it.
final class PaperDevice: USBDevice {
    let descriptor = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x5300)
    let speed = USBSpeed.high
    let queuesTransfers: Bool
    init(queuesTransfers: Bool) { self.queuesTransfers = queuesTransfers }
    var activeConfiguration: USBConfigurationDescriptor? { nil }
    func open() async throws {}
    func close() async {}
    func setConfiguration(_ value: UInt8) async -> USBTransferStatus { .stall }
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus { .stall }
    func altSetting(interface: UInt8) async -> UInt8? { nil }
    func reset() async -> USBTransferStatus { .stall }
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus { .stall }
    func submit(_ request: USBTransferRequest,
                completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        Issue.record("the book called the device")
        return nil
    }
}
