import NIOCore

/// Image reads of the stick: done on the IN leg, as much as the host's IN
/// transfer asks for (not the whole command when the CBW arrives), on NIO's
/// file-I/O thread pool (a blocking pread must not hold a thread of the
/// cooperative pool, nor the caller), with the next chunk read ahead for
/// sequential access: an IN that finds it landed is answered at once.
extension StickState {
    struct ReadAhead: Sendable {
        var range: BulkOnlyState.ImageRange
        /// The read's job.
        let id: Int
        /// nil while the read runs; then the bytes (nil inside: the read failed).
        var landed: ByteBuffer?? = nil
    }

    /// A bulk IN waiting for the read `readID` (a read ahead, or its own).
    struct BOTRead: Sendable {
        var readID: Int
        var phase: BulkOnlyState.DataIn
        var transfer: BOTTransfer
        var fromReadAhead: Bool
    }

    /// The data phase of a READ: `count` image bytes at `offset` for a host
    /// that expects `expected`.
    mutating func imagePhase(offset: UInt64, count: Int, expected: Int, csw: CommandStatusWrapper) -> BulkOnlyState {
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

    /// One IN transfer of a READ's data phase: at once from a landed read
    /// ahead, else when the read lands (the BOT transfers after it queue).
    mutating func imageIn(_ phase: BulkOnlyState.DataIn, _ t: BOTTransfer, _ e: inout StickEffects) {
        guard let range = phase.image else { return e.complete(t.completion, .failed(.stall)) }
        let n = min(t.length, range.count)
        if let ahead = readAhead, ahead.range.offset == range.offset, ahead.range.count >= n {
            switch ahead.landed {
            case .some(.some(let data)):
                readAhead = nil
                return imageServed(phase, t, data.getSlice(at: data.readerIndex, length: n), &e)
            case nil:
                botBusy = true
                botRead = BOTRead(readID: ahead.id, phase: phase, transfer: t, fromReadAhead: true)
                return
            case .some(nil):
                break   // it failed: read again
            }
        }
        readAhead = nil
        let id = nextID()
        botBusy = true
        botRead = BOTRead(readID: id, phase: phase, transfer: t, fromReadAhead: false)
        read(.init(offset: range.offset, count: n), &e) { s, data, e in s.readLanded(id: id, data, &e) }
    }

    /// Reads `range` on the pool, then `landed` with the bytes (nil: failed).
    mutating func read(_ range: BulkOnlyState.ImageRange, _ e: inout StickEffects,
                       landed: @escaping @Sendable (inout StickState, ByteBuffer?, inout StickEffects) -> Void) {
        let image = self.image
        startIO(IOJob(work: {
            let data = image.read(offset: range.offset, count: range.count)
            return IOResult(ok: data != nil, data: data)
        }, landed: { s, r, e in landed(&s, r.data, &e) }), &e)
    }

    private mutating func readLanded(id: Int, _ data: ByteBuffer?, _ e: inout StickEffects) {
        if readAhead?.id == id { readAhead?.landed = .some(data) }
        guard let w = botRead, w.readID == id else { return }
        botRead = nil
        botBusy = false
        if w.fromReadAhead { readAhead = nil }
        // A reset or another command may have come while the read ran.
        if case .dataIn(let now) = bot, now.image == w.phase.image, now.sent == w.phase.sent,
           now.csw.tag == w.phase.csw.tag {
            if data == nil && w.fromReadAhead {
                imageIn(w.phase, w.transfer, &e)   // the read ahead failed: read it now
            } else {
                let n = min(w.transfer.length, w.phase.image?.count ?? 0)
                imageServed(w.phase, w.transfer, data.map { $0.getSlice(at: $0.readerIndex, length: n)! }, &e)
            }
        } else {
            e.complete(w.transfer.completion, .failed(.cancelled))
        }
        botDrain(&e)
    }

    /// The IN transfer gets `chunk` (nil: the read failed); the data phase goes on.
    private mutating func imageServed(_ phase: BulkOnlyState.DataIn, _ t: BOTTransfer, _ chunk: ByteBuffer?,
                                      _ e: inout StickEffects) {
        guard let range = phase.image else { return e.complete(t.completion, .failed(.stall)) }
        let n = min(t.length, range.count)
        var next = phase
        guard let chunk else {
            // The host gets a short (empty) transfer, then a failed CSW with
            // read-error sense; a phase error stays a phase error.
            if next.csw.status != 2 { next.csw.status = 1 }
            next.csw.residue &+= UInt32(range.count)
            scsi.sense = .readError
            bot = .status(next.csw)
            return e.complete(t.completion, .inData(ByteBuffer()))
        }
        next.sent += n
        next.image = n < range.count ? .init(offset: range.offset + UInt64(n), count: range.count - n) : nil
        // A short packet, or all the host asked for, ends the data phase.
        bot = (next.image == nil || n < t.length) ? .status(next.csw) : .dataIn(next)
        startReadAhead(after: .init(offset: range.offset, count: n), &e)
        e.complete(t.completion, .inData(chunk))
    }

    /// Reads the bytes after `served`, as many again, while the host works.
    private mutating func startReadAhead(after served: BulkOnlyState.ImageRange, _ e: inout StickEffects) {
        let offset = served.offset + UInt64(served.count)
        guard served.count > 0, offset < image.size else { readAhead = nil; return }
        let range = BulkOnlyState.ImageRange(offset: offset, count: Int(min(UInt64(served.count), image.size - offset)))
        let id = nextID()
        readAhead = ReadAhead(range: range, id: id)
        read(range, &e) { s, data, e in s.readLanded(id: id, data, &e) }
    }
}
