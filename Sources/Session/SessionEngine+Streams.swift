import Devices
import NIOCore
import USBRedirProtocol

/// Streams the VM starts and stops: interrupt receiving, isochronous streams,
/// buffered bulk receiving, and bulk stream allocation. Each receiving stream
/// is a loop on its own task that reads the device and sends what it gets;
/// each packet holds a permit of the session's budget from before the read
/// until the outbox has written it, so streams count with the transfers in flight.
extension SessionEngine {
    func handleStreamControl(_ message: USBRedirMessage, id: UInt64) async {
        switch message {
        case .startInterruptReceiving(let m):
            let read = StreamRead(endpoint: m.endpoint, length: await maxPacketSize(m.endpoint), kind: .interrupt)
            let ok = startStream(read) { r in
                .interruptPacket(.init(endpoint: m.endpoint, status: WireValues.status(r.status).rawValue,
                                       length: UInt16(clamping: r.data?.readableBytes ?? 0), data: r.data ?? ByteBuffer()))
            }
            await send(.interruptReceivingStatus(.init(status: status(ok), endpoint: m.endpoint)), id: id)
        case .stopInterruptReceiving(let m):
            stopStream(m.endpoint)
            await send(.interruptReceivingStatus(.init(status: 0, endpoint: m.endpoint)), id: id)
        case .startIsoStream(let m):
            var ok = device != nil
            if m.endpoint & 0x80 != 0 {
                var read = StreamRead(endpoint: m.endpoint, length: await maxPacketSize(m.endpoint), kind: .isochronous)
                read.depth = Int(m.urbCount) * Int(m.packetsPerURB)
                ok = startStream(read) { r in
                    .isoPacket(.init(endpoint: m.endpoint, status: WireValues.status(r.status).rawValue,
                                     length: UInt16(clamping: r.data?.readableBytes ?? 0), data: r.data ?? ByteBuffer()))
                }
            }
            await send(.isoStreamStatus(.init(status: status(ok), endpoint: m.endpoint)), id: id)
        case .stopIsoStream(let m):
            stopStream(m.endpoint)
            await send(.isoStreamStatus(.init(status: 0, endpoint: m.endpoint)), id: id)
        case .startBulkReceiving(let m):
            var read = StreamRead(endpoint: m.endpoint, length: Int(m.bytesPerTransfer), kind: .bulk(streamID: m.streamID))
            read.depth = Int(m.transferCount)
            let ok = startStream(read) { r in
                let data = r.data ?? ByteBuffer()
                return .bufferedBulkPacket(.init(streamID: m.streamID, length: UInt32(data.readableBytes),
                                                 endpoint: m.endpoint, status: WireValues.status(r.status).rawValue,
                                                 data: data))
            }
            await send(.bulkReceivingStatus(.init(streamID: m.streamID, endpoint: m.endpoint, status: status(ok))), id: id)
        case .stopBulkReceiving(let m):
            stopStream(m.endpoint)
            await send(.bulkReceivingStatus(.init(streamID: m.streamID, endpoint: m.endpoint, status: 0)), id: id)
        case .allocBulkStreams(let m):
            let s = await device?.allocateStreams(endpoints: Self.endpoints(inMask: m.endpoints), count: m.streamCount)
            await send(.bulkStreamsStatus(.init(endpoints: m.endpoints, streamCount: m.streamCount,
                                                status: WireValues.status(s ?? .noDevice).rawValue)), id: id)
        case .freeBulkStreams(let m):
            let s = await device?.freeStreams(endpoints: Self.endpoints(inMask: m.endpoints))
            await send(.bulkStreamsStatus(.init(endpoints: m.endpoints, streamCount: 0,
                                                status: WireValues.status(s ?? .noDevice).rawValue)), id: id)
        default:
            break
        }
    }

    /// Starts a receiving loop on the read's endpoint; false without a device.
    private func startStream(_ read: StreamRead,
                             _ packet: @escaping @Sendable (USBTransferResult) -> USBRedirMessage) -> Bool {
        guard let device else { return false }
        stopStream(read.endpoint)
        let generation = book.generation
        streams[read.endpoint] = Task(executorPreference: loop) { [weak self] in
            await self?.receivingStream(read, on: device, generation: generation, packet)
        }
        return true
    }

    private func stopStream(_ endpoint: UInt8) {
        streams.removeValue(forKey: endpoint)?.cancel()
    }

    /// Sends one packet of a receiving stream; true when its status was a failure.
    func deliverStreamPacket(_ message: USBRedirMessage, generation: Int, releasing permit: InFlightBudget.Permit) -> Bool {
        // Called from the stream's task: once stopped, nothing more is sent,
        // even if the stop came while this packet waited for the actor. The
        // check and the queueing happen in one turn of the actor, so a packet
        // queued here is ahead of any stop status.
        guard generation == book.generation, !Task.isCancelled else {
            releasePermit(permit)
            return true
        }
        let (status, length): (UInt8, Int) = switch message {
        case .interruptPacket(let p): (p.status, Int(p.length))
        case .isoPacket(let p): (p.status, Int(p.length))
        case .bufferedBulkPacket(let p): (p.status, Int(p.length))
        default: (0, 0)
        }
        if status == 0 {
            counters.transfersIn += 1
            counters.bytesIn += length
        } else {
            countError(USBRedirStatus(rawValue: status) ?? .ioError)
        }
        queueForVM(message, id: nextStreamPacketID(), releasing: permit)
        return status != 0
    }

    /// One packet of an interrupt or iso endpoint: its wMaxPacketSize (with the
    /// high-bandwidth multiplier of bits 11-12), so each read is one packet.
    private func maxPacketSize(_ endpoint: UInt8) async -> Int {
        let e = await device?.activeConfiguration?.interfaces.lazy.flatMap(\.endpoints).first { $0.address == endpoint }
        guard let raw = e?.maxPacketSize else { return 1024 }
        return Int(raw & 0x7ff) * (1 + Int((raw >> 11) & 0x3))
    }

    private func status(_ ok: Bool) -> UInt8 {
        ok ? USBRedirStatus.success.rawValue : USBRedirStatus.ioError.rawValue
    }

    static func endpoints(inMask mask: UInt32) -> [UInt8] {
        (0..<32).filter { mask & (1 << UInt32($0)) != 0 }.map { usbRedirEndpointAddress(index: $0) }
    }
}
