import CLibUSB
import NIOCore

/// One transfer to submit: what the device methods build from a request.
struct LibUSBTransferRequest: Sendable {
    enum Kind: Sendable {
        case control(USBSetupPacket)
        case bulk(streamID: UInt32)
        case interrupt
        /// One isochronous packet (the session sends and receives them one at a time).
        case isochronous
    }

    var kind: Kind
    var endpoint: UInt8
    /// Data bytes: to receive for IN, the count of `data` for OUT.
    var length: Int
    var data: ByteBuffer?
    /// 0 waits for ever (libusb's convention).
    var timeoutMilliseconds: UInt32

    var isIn: Bool {
        if case .control(let setup) = kind { return setup.isIn }
        return endpoint & 0x80 != 0
    }
}

/// The transfers of one device handle still owned by libusb, so that
/// closing the handle can cancel them and wait for their completions first
/// (libusb_close with transfers in flight is undefined behaviour).
final class LibUSBTransferSet: Sendable {
    private let live = LibUSBLocked<[ObjectIdentifier: LibUSBPendingTransfer]>([:])

    func insert(_ t: LibUSBPendingTransfer) { live.withLock { $0[ObjectIdentifier(t)] = t } }
    func remove(_ t: LibUSBPendingTransfer) { live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(t)) } }
    var count: Int { live.withLock { $0.count } }
    func cancelAll() {
        for t in live.withLock({ Array($0.values) }) { t.cancel() }
    }
}

/// A libusb_transfer in flight, bridged to one suspended Swift task or to a
/// completion handler.
///
/// Life: created -> submitted -> finished. The completion callback runs on
/// the context's event thread, hands the result on and never blocks.
/// Cancellation (the task's, or `cancelAll`) calls libusb_cancel_transfer;
/// libusb then completes the transfer with LIBUSB_TRANSFER_CANCELLED. A
/// cancellation that comes before the submit makes the submit not happen.
final class LibUSBPendingTransfer: USBCancellableTransfer, @unchecked Sendable {
    typealias Completion = @Sendable (USBTransferResult) -> Void
    private enum Phase { case created, submitted, finished }
    private struct State {
        var phase = Phase.created
        var cancelRequested = false
        var completion: Completion?
    }

    private let state = LibUSBLocked(State())
    private let transfer: UnsafeMutablePointer<libusb_transfer>
    private let buffer: UnsafeMutableRawBufferPointer
    private let request: LibUSBTransferRequest
    private let owner: LibUSBTransferSet
    /// Where the data stage starts in `buffer` (after the 8-byte setup of a control transfer).
    private let dataOffset: Int

    /// Submits `request` on `handle` and returns at once; `completion` runs
    /// once, on the event thread (or here, when the submit fails).
    static func start(_ request: LibUSBTransferRequest, on handle: OpaquePointer, owner: LibUSBTransferSet,
                      completion: @escaping Completion) -> LibUSBPendingTransfer? {
        guard let pending = LibUSBPendingTransfer(request, handle: handle, owner: owner) else {
            completion(.failed(.ioError))
            return nil
        }
        pending.start(completion)
        return pending
    }

    private init?(_ request: LibUSBTransferRequest, handle: OpaquePointer, owner: LibUSBTransferSet) {
        let isoPackets: Int32 = if case .isochronous = request.kind { 1 } else { 0 }
        guard let transfer = libusb_alloc_transfer(isoPackets) else { return nil }
        // LIBUSB_CONTROL_SETUP_SIZE (a macro Swift does not import) is 8.
        let offset = if case .control = request.kind { MemoryLayout<libusb_control_setup>.size } else { 0 }
        self.transfer = transfer
        self.request = request
        self.owner = owner
        self.dataOffset = offset
        buffer = .allocate(byteCount: max(offset + request.length, 1), alignment: 16)
        // OUT: the data, then zeros, so a data stage shorter than its length
        // never sends what the heap held before. IN: left as it is (only
        // the bytes the device wrote are ever read back), which spares a
        // memset of up to 16 MiB per read.
        if !request.isIn {
            var n = 0
            request.data?.withUnsafeReadableBytes { bytes in
                n = min(bytes.count, request.length)
                UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + n)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<n]))
            }
            UnsafeMutableRawBufferPointer(rebasing: buffer[(offset + n)...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        let t = transfer
        t.pointee.dev_handle = handle
        t.pointee.endpoint = request.endpoint
        t.pointee.timeout = request.timeoutMilliseconds
        t.pointee.buffer = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        t.pointee.length = Int32(offset + request.length)
        t.pointee.callback = { transfer in
            let pending = Unmanaged<LibUSBPendingTransfer>.fromOpaque(transfer!.pointee.user_data).takeRetainedValue()
            pending.complete()
        }
        switch request.kind {
        case .control(let setup):
            t.pointee.type = UInt8(LIBUSB_TRANSFER_TYPE_CONTROL.rawValue)
            t.pointee.endpoint = 0
            libusb_fill_control_setup(t.pointee.buffer, setup.requestType, setup.request, setup.value,
                                      setup.index, UInt16(request.length))
        case .bulk(let streamID):
            // libusb's Linux backend only passes the stream id on for this type.
            let type = streamID != 0 ? LIBUSB_TRANSFER_TYPE_BULK_STREAM : LIBUSB_TRANSFER_TYPE_BULK
            t.pointee.type = UInt8(type.rawValue)
            if streamID != 0 { libusb_transfer_set_stream_id(t, streamID) }
        case .interrupt:
            t.pointee.type = UInt8(LIBUSB_TRANSFER_TYPE_INTERRUPT.rawValue)
        case .isochronous:
            t.pointee.type = UInt8(LIBUSB_TRANSFER_TYPE_ISOCHRONOUS.rawValue)
            t.pointee.num_iso_packets = 1
            libusb_set_iso_packet_lengths(t, UInt32(request.length))
        }
    }

    deinit {
        libusb_free_transfer(transfer)
        buffer.deallocate()
    }

    private func start(_ completion: @escaping Completion) {
        let failure: USBTransferResult? = state.withLock { s in
            if s.cancelRequested {
                s.phase = .finished
                return .failed(.cancelled)
            }
            s.completion = completion
            owner.insert(self)
            let retained = Unmanaged.passRetained(self)
            transfer.pointee.user_data = retained.toOpaque()
            // Never completes synchronously: the callback only runs from the
            // event thread, which waits for this lock.
            let rc = libusb_submit_transfer(transfer)
            guard rc == 0 else {
                retained.release()
                owner.remove(self)
                s.phase = .finished
                s.completion = nil
                return .failed(LibUSBStatus.error(rc))
            }
            s.phase = .submitted
            return nil
        }
        if let failure { completion(failure) }
    }

    func cancel() {
        let inFlight = state.withLock { s in
            s.cancelRequested = true
            return s.phase == .submitted
        }
        // Outside the lock: the completion may race us, and libusb answers a
        // cancel of a finished transfer with NOT_FOUND, harmlessly (the
        // memory stays ours until deinit).
        if inFlight { _ = libusb_cancel_transfer(transfer) }
    }

    /// On the event thread.
    private func complete() {
        let result = makeResult()
        let completion = state.withLock { s in
            s.phase = .finished
            defer { s.completion = nil }
            return s.completion
        }
        owner.remove(self)
        completion?(result)
    }

    private func makeResult() -> USBTransferResult {
        var status = LibUSBStatus.transfer(transfer.pointee.status)
        var actual = Int(transfer.pointee.actual_length)
        if case .isochronous = request.kind, status == .success {
            // The transfer completes; the packet carries its own outcome.
            let packet = isoPacketDescriptor()
            status = LibUSBStatus.transfer(packet.pointee.status)
            actual = Int(packet.pointee.actual_length)
        }
        actual = max(0, min(actual, request.length))
        guard request.isIn else { return USBTransferResult(status: status, consumed: actual) }
        // Short IN data: only what arrived, also when the transfer ended badly
        // (a stall or a timeout after a partial transfer still delivers it).
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[dataOffset..<(dataOffset + actual)])
        return USBTransferResult(status: status, data: ByteBuffer(bytes: bytes))
    }

    /// iso_packet_desc[0]: a flexible array member, which Swift does not
    /// import; it starts right after num_iso_packets (C layout, 4-byte aligned).
    private func isoPacketDescriptor() -> UnsafeMutablePointer<libusb_iso_packet_descriptor> {
        let offset = MemoryLayout<libusb_transfer>.offset(of: \.num_iso_packets)! + MemoryLayout<Int32>.size
        return (UnsafeMutableRawPointer(transfer) + offset).assumingMemoryBound(to: libusb_iso_packet_descriptor.self)
    }
}
