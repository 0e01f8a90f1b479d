import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Image reads of the stick: done on the IN leg, as much as the host's IN
/// transfer asks for (not the whole command when the CBW arrives), on NIO's
/// file-I/O thread pool (a blocking pread must not hold a thread of the
/// cooperative pool), with the next chunk read ahead for sequential access.
extension MassStorageDevice {
    struct ReadAhead {
        var range: BulkOnlyState.ImageRange
        var read: EventLoopFuture<ByteBuffer?>
        /// The bytes once read, set by the pool thread: taken without a hop
        /// (the future's value is reached only through its event loop).
        let landed: ReadAheadLanding
    }

    /// Whether the read ahead has landed and holds `count` bytes at `offset`.
    func readAheadHolds(offset: UInt64, count: Int) -> Bool {
        guard let ahead = readAhead, ahead.range.offset == offset, ahead.range.count >= count else { return false }
        return ahead.landed.value != nil
    }

    /// The data phase of a READ: `count` image bytes at `offset` for a host
    /// that expects `expected`.
    func imagePhase(offset: UInt64, count: Int, expected: Int, csw: CommandStatusWrapper) -> BulkOnlyState {
        var csw = csw
        if count > expected {
            // More than the host asked for (BOT 6.7.2, case 7, Hi < Di): the
            // host gets what it asked for, then a phase error.
            csw.residue = 0
            guard expected > 0 else { return .status(csw.phaseError) }
            return .dataIn(.init(data: ByteBuffer(), image: .init(offset: offset, count: expected), sent: 0,
                                 csw: csw.phaseError))
        }
        csw.residue = UInt32(expected - count)
        scsi.sense = .none
        if expected == 0 { return .status(csw) }
        let image = count > 0 ? BulkOnlyState.ImageRange(offset: offset, count: count) : nil
        return .dataIn(.init(data: ByteBuffer(), image: image, sent: 0, csw: csw))
    }

    /// One IN transfer of a READ's data phase.
    func imageIn(_ phase: BulkOnlyState.DataIn, length: Int) async -> USBTransferResult {
        guard let range = phase.image else { return .failed(.stall) }
        let n = min(length, range.count)
        let chunk = await readImage(.init(offset: range.offset, count: n))
        // A reset or another command may have come while the read ran.
        guard case .dataIn(let now) = bot, now.image == range, now.sent == phase.sent,
              now.csw.tag == phase.csw.tag else { return .failed(.cancelled) }
        var next = phase
        guard let chunk else {
            // The host gets a short (empty) transfer, then a failed CSW with
            // read-error sense; a phase error stays a phase error.
            if next.csw.status != 2 { next.csw.status = 1 }
            next.csw.residue &+= UInt32(range.count)
            scsi.sense = .readError
            bot = .status(next.csw)
            return .inData(ByteBuffer())
        }
        next.sent += n
        next.image = n < range.count ? .init(offset: range.offset + UInt64(n), count: range.count - n) : nil
        // A short packet, or all the host asked for, ends the data phase.
        bot = (next.image == nil || n < length) ? .status(next.csw) : .dataIn(next)
        startReadAhead(after: .init(offset: range.offset, count: n))
        return .inData(chunk)
    }

    /// `range` from the read ahead when it holds it, else from the image.
    private func readImage(_ range: BulkOnlyState.ImageRange) async -> ByteBuffer? {
        if let ahead = readAhead, ahead.range.offset == range.offset, ahead.range.count >= range.count {
            readAhead = nil
            let data: ByteBuffer?? = if let landed = ahead.landed.value { landed } else { try? await ahead.read.get() }
            if let data, let data { return data.getSlice(at: data.readerIndex, length: range.count) }
        }
        readAhead = nil
        return await Self.poolRead(image, range)
    }

    /// Reads the bytes after `served`, as many again, while the host works.
    private func startReadAhead(after served: BulkOnlyState.ImageRange) {
        let offset = served.offset + UInt64(served.count)
        guard served.count > 0, offset < image.size else { readAhead = nil; return }
        let range = BulkOnlyState.ImageRange(offset: offset, count: Int(min(UInt64(served.count), image.size - offset)))
        let image = self.image
        let landing = ReadAheadLanding()
        // A future, not a task: the pool thread completes it on an event loop.
        let read = NIOThreadPool.singleton.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.any()) {
            let data = image.read(offset: range.offset, count: range.count)
            landing.set(data)
            return data
        }
        readAhead = ReadAhead(range: range, read: read, landed: landing)
    }

    static func poolRead(_ image: ImageFile, _ range: BulkOnlyState.ImageRange) async -> ByteBuffer? {
        let data = try? await NIOThreadPool.singleton.runIfActive { image.read(offset: range.offset, count: range.count) }
        return data ?? nil
    }
}

/// Where a read ahead leaves its bytes for the stick to take without a hop.
final class ReadAheadLanding: Sendable {
    private let box = NIOLockedValueBox<ByteBuffer??>(nil)

    /// nil while the read runs; then the bytes (nil inside: the read failed).
    var value: ByteBuffer?? { box.withLockedValue { $0 } }

    func set(_ data: ByteBuffer?) { box.withLockedValue { $0 = .some(data) } }
}
