import Devices
import NIOCore
import USBRedirProtocol

/// One data packet from the VM, queued on its endpoint.
struct TransferJob: Sendable {
    enum Kind: Sendable {
        case control(USBRedirMessage.ControlPacket)
        case bulk(USBRedirMessage.BulkPacket)
        case interrupt(USBRedirMessage.InterruptPacket)
        /// Data for an isochronous OUT stream: no reply (failures show in
        /// the next iso_stream_status), but in order on its endpoint and
        /// held in the budget like any transfer.
        case isoOut(USBRedirMessage.IsoPacket)
    }

    /// The VM's packet id, echoed in the reply.
    var id: UInt64
    /// The engine's own number for it: unique, unlike packet ids.
    var serial: UInt64
    var generation: Int
    var device: any USBDevice
    var kind: Kind
    /// Its share of the session's budget, held until the reply is written
    /// (nil for a job answered at once, without the device).
    var permit: InFlightBudget.Permit?

    var endpoint: UInt8 {
        switch kind {
        case .control: 0
        case .bulk(let p): p.endpoint
        case .interrupt(let p): p.endpoint
        case .isoOut(let p): p.endpoint
        }
    }

    /// Whether its reply must wait for the earlier ones of its endpoint
    /// (TransferBook.EndpointReplyOrder). Not on bulk streams: each stream is a queue of
    /// its own (UAS answers its commands in any order), and QEMU keeps no
    /// order across them.
    var repliesInEndpointOrder: Bool {
        switch kind {
        case .bulk(let p): p.streamID == 0
        case .isoOut: false
        case .control, .interrupt: true
        }
    }

    /// What the device is asked; nil for a control packet whose setup is
    /// invalid (answered without the device).
    var request: USBTransferRequest? {
        switch kind {
        case .control(let p): Self.setup(of: p).map { .control($0, data: p.data) }
        case .bulk(let p): .data(endpoint: p.endpoint, length: Int(p.length), data: p.data, streamID: p.streamID)
        case .interrupt(let p): .data(endpoint: p.endpoint, length: Int(p.length), data: p.data, streamID: 0)
        case .isoOut(let p): .isochronous(endpoint: p.endpoint, length: Int(p.length), data: p.data)
        }
    }

    /// Whether the device takes it alongside earlier transfers of its
    /// endpoint (a device that queues; never control, which is one pipe
    /// shared by every request) rather than after them.
    var queuesOnDevice: Bool {
        if case .control = kind { return false }
        return device.queuesTransfers
    }

    /// The setup stage of a control packet; nil when it is invalid.
    /// usbredir states the direction twice: the endpoint (0x80 or 0x00)
    /// decides who carries the data, bmRequestType what the device does.
    /// When they disagree the device would get an OUT request whose data
    /// stage the guest never sent (or an IN request with data): invalid, and
    /// the device never sees it.
    private static func setup(of p: USBRedirMessage.ControlPacket) -> USBSetupPacket? {
        guard p.endpoint & 0x80 == p.requestType & 0x80 else { return nil }
        return USBSetupPacket(requestType: p.requestType, request: p.request, value: p.value, index: p.index, length: p.length)
    }

    /// The reply: same id and header, the device's status, IN data or the
    /// OUT length consumed; nil for isochronous OUT, which has none.
    func reply(_ r: USBTransferResult) -> USBRedirMessage? {
        let status = WireValues.status(r.status).rawValue
        let isIn = endpointIsIn
        let length = isIn ? (r.data?.readableBytes ?? 0) : r.consumed
        let data = isIn ? (r.data ?? ByteBuffer()) : nil
        switch kind {
        case .control(var p):
            p.status = status
            p.length = UInt16(clamping: length)
            p.data = data
            return .controlPacket(p)
        case .bulk(var p):
            p.status = status
            p.length = UInt32(clamping: length)
            p.data = data
            return .bulkPacket(p)
        case .interrupt(var p):
            p.status = status
            p.length = UInt16(clamping: length)
            p.data = data
            return .interruptPacket(p)
        case .isoOut:
            return nil
        }
    }

    var endpointIsIn: Bool {
        switch kind {
        case .control(let p): p.endpoint & 0x80 != 0
        case .bulk(let p): p.endpoint & 0x80 != 0
        case .interrupt(let p): p.endpoint & 0x80 != 0
        case .isoOut(let p): p.endpoint & 0x80 != 0
        }
    }
}
