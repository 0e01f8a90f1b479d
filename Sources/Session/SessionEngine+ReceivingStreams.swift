import Devices
import NIOConcurrencyHelpers
import NIOCore
import USBRedirProtocol

/// What a receiving stream reads from its endpoint.
struct StreamRead: Sendable {
    enum Kind: Sendable {
        case interrupt, isochronous
        case bulk(streamID: UInt32)
    }

    let endpoint: UInt8
    let length: Int
    let kind: Kind
    /// Reads kept in a queueing device at once: what the VM asked for
    /// (transfer count, URBs x packets per URB), within 1...maxDepth.
    var depth = 4

    static let maxDepth = 32

    /// What each read holds of the session's budget.
    var permitBytes: Int { max(length, 1) }
    /// `depth`, within 1...maxDepth.
    var queueDepth: Int { min(max(depth, 1), Self.maxDepth) }

    /// Reads the device has at once: the read's depth for a device that
    /// queues, else one.
    func depth(on device: any USBDevice) -> Int { device.queuesTransfers ? queueDepth : 1 }

    var request: USBTransferRequest {
        switch kind {
        case .interrupt: .data(endpoint: endpoint, length: length, data: nil, streamID: 0)
        case .isochronous: .isochronous(endpoint: endpoint, length: length, data: nil)
        case .bulk(let streamID): .data(endpoint: endpoint, length: length, data: nil, streamID: streamID)
        }
    }
}

/// The reads a queued stream has started, oldest first, for cancelling them.
private final class StartedReads: Sendable {
    private let reads = NIOLockedValueBox(CircularBuffer<(any USBCancellableTransfer)?>())
    func append(_ read: (any USBCancellableTransfer)?) { reads.withLockedValue { $0.append(read) } }
    func dropOldest() { reads.withLockedValue { _ = $0.popFirst() } }
    func cancelAll() {
        for read in reads.withLockedValue({ Array($0) }) { read?.cancel() }
    }
}

extension SessionEngine {
    /// A receiving stream: on a device that queues, up to the read's depth
    /// in flight, so the next one is already queued when a packet arrives
    /// and the device never waits for us between packets (usbredirhost keeps
    /// the transfers the VM asks for too); else one read at a time. Each
    /// holds its permit; packets go out in the order the reads complete (the
    /// device keeps the endpoint's order). Ends when its task is cancelled:
    /// what is still in the device is cancelled.
    func receivingStream(_ read: StreamRead, on device: any USBDevice, generation: Int,
                      _ packet: @escaping @Sendable (USBTransferResult) -> USBRedirMessage) async {
        let (results, sink) = AsyncStream<USBTransferResult>.makeStream()
        let started = StartedReads()
        await withTaskCancellationHandler {
            var permits = CircularBuffer<InFlightBudget.Permit>()
            let start = { started.append(device.submit(read.request) { sink.yield($0) }) }
            await fillStream(&permits, read, depth: read.depth(on: device), start)
            for await result in results {
                started.dropOldest()
                guard let permit = permits.popFirst() else { break }
                if deliverStreamPacket(packet(result), generation: generation, releasing: permit) {
                    // A failing endpoint is retried gently rather than spun on.
                    try? await Task.sleep(nanoseconds: 10_000_000)
                }
                if Task.isCancelled { break }
                await fillStream(&permits, read, depth: read.depth(on: device), start)
            }
            // Reads cancelled in the device: their packets will not be sent.
            for permit in permits { releasePermit(permit) }
        } onCancel: {
            started.cancelAll()
            sink.finish()
        }
    }

    /// Starts reads until the stream has its depth. The first permit may
    /// wait, as a lone read's would; the others are taken only when there is
    /// room, so the stream never waits for permits its own reads hold.
    private func fillStream(_ permits: inout CircularBuffer<InFlightBudget.Permit>, _ read: StreamRead, depth: Int,
                            _ start: () -> Void) async {
        while permits.count < depth, !Task.isCancelled {
            let permit = permits.isEmpty ? await acquirePermit(bytes: read.permitBytes)
                : tryAcquirePermit(bytes: read.permitBytes)
            guard let permit else { return }
            guard !Task.isCancelled else { return releasePermit(permit) }
            permits.append(permit)
            start()
        }
    }

    /// A permit when the budget has room now, else nil.
    func tryAcquirePermit(bytes: Int) -> InFlightBudget.Permit? {
        collectWrites()
        return book.admits(bytes) ? book.take(bytes) : nil
    }
}
