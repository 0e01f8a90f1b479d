import Common
import Devices
import Logging
import NIOCore
import Transport
import USBRedirProtocol

/// The engine behind a `RedirectionSession` (the public handle an assignment
/// keeps for its whole life): the state of the session, serialised by the
/// actor: the negotiated protocol, the plugged device, transfers in flight,
/// streams. Device work runs outside it: submitted, completed back to it.
/// The actor's turns run on the session's event loop (`SessionLoop`).
actor SessionEngine {
    static let capabilities = USBRedirCapabilities.all

    let logger: Logger
    let limits: SessionLimits
    var link = LinkState.offline
    var counters = SessionCounters()
    var writer: (any USBRedirByteWriter)?
    var negotiation: USBRedirNegotiation?
    /// The connection's parser: the engine parses what the reader hands it.
    var parser = USBRedirParser(role: .host, capabilities: SessionEngine.capabilities)
    var device: (any USBDevice)?
    var compressible = true
    var peerFilter: [USBRedirFilterRule]?
    /// The transfers from admission to reply, with the budget's accounting
    /// (TransferBook); the engine carries out what it decides (`perform`).
    var book: TransferBook
    /// Whoever waits for room in the budget (`acquirePermit`).
    var budgetWaiters: [CheckedContinuation<Void, Never>] = []
    /// Transfers on the device that it can cancel, by serial.
    var running: [UInt64: any USBCancellableTransfer] = [:]
    nonisolated let completions = CompletionMailbox()
    var streams: [UInt8: Task<Void, Never>] = [:]
    var streamPacketID: UInt64 = 0
    var outbox = Outbox()
    /// The engine is in a burst (one read's packets): replies are handed
    /// over at its end... (kept across connections, like the tasks that count)
    var bursts = 0
    /// ...unless someone waits on writes meanwhile (counted: several may).
    var lifts = 0
    var lastError: String?
    var trace = PacketTrace()
    /// Counts connections, so a close reported late by an earlier one is ignored.
    var connectionNumber = 0
    /// The connection closed (seen by the transport), though the reader may
    /// not have read its end yet: waits for permits end, reading stops.
    var peerGone = false
    /// A packet read in turn that had to wait, for `drain`.
    var waiting: USBRedirPacket?
    /// `drain` runs: what is read meanwhile waits in the parser for it.
    var draining = false

    nonisolated let loop: SessionLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    init(logger: Logger, limits: SessionLimits, loop: SessionLoop) {
        self.loop = loop
        self.logger = logger
        self.limits = limits
        book = TransferBook(maxTransfers: limits.maxTransfersInFlight, maxBytes: limits.maxBytesInFlight)
    }

    deinit {
        completions.close()
    }

    // MARK: Connection lifetime

    /// Returns the connection's number, for `connectionClosed`.
    func begin(writer: any USBRedirByteWriter) -> Int {
        self.writer = writer
        connectionNumber += 1
        peerGone = false
        shutOutbox()   // an earlier connection's, should `end` not have run
        outbox = Outbox()
        negotiation = nil
        parser = USBRedirParser(role: .host, capabilities: Self.capabilities)
        waiting = nil
        link = .awaitingHello
        peerFilter = nil
        return connectionNumber
    }

    /// The transport saw connection `number` close. The reader may be
    /// waiting for the budget rather than reading, so it would not see the
    /// end itself: whatever waits on the connection goes on now.
    func connectionClosed(_ number: Int) {
        guard number == connectionNumber, writer != nil else { return }
        peerGone = true
        shutOutbox()
        wakeBudgetWaiters()
    }

    /// Bytes from the VM: every whole packet in them is handled, in order.
    /// Throws on malformed bytes; returns an end when the session must stop.
    func receive(_ bytes: ByteBuffer) async throws -> SessionEnd? {
        parser.append(bytes)
        return try await drain()
    }

    /// What `receiveInTurn` did with a read.
    enum InTurn {
        /// Every whole packet is handled; read on.
        case handled
        /// A packet must wait for something (the device, the budget, the
        /// VM): `drain` takes it and the rest, and reading pauses meanwhile.
        case mustWait
        case ended(SessionEnd)
    }

    /// Bytes the session's channel handler read, handled in its turn on the
    /// loop as far as no packet needs to wait (see `handleInTurn`); the
    /// replies go out at the end of the read. Throws on malformed bytes.
    func receiveInTurn(_ bytes: ByteBuffer) throws -> InTurn {
        parser.append(bytes)
        if draining { return .mustWait }   // the drain takes them, in order
        trace.refresh(logger)
        return try holdingFlushInTurn {
            while let packet = try parser.nextPacket() {
                note(packet)
                guard handleInTurn(packet) else {
                    waiting = packet
                    draining = true
                    return .mustWait
                }
                if peerGone { return .ended(.transportClosed(.closedByPeer)) }
            }
            return .handled
        }
    }

    /// Handles the packet that had to wait, if any, then every whole packet
    /// the parser holds, waiting where one must.
    func drain() async throws -> SessionEnd? {
        draining = true
        defer { draining = false }
        trace.refresh(logger)
        return try await holdingFlush {
            if let packet = waiting {
                waiting = nil
                if let end = await handle(packet, negotiation: parser.negotiation) { return end }
            }
            while let packet = try parser.nextPacket() {
                note(packet)
                if let end = await handle(packet, negotiation: parser.negotiation) { return end }
                if peerGone { return .transportClosed(.closedByPeer) }
            }
            return nil
        }
    }

    /// The connection is gone: stop everything that talks to it. The device
    /// stays plugged, to be announced on the next connection.
    func end(reason: String?) async {
        writer = nil
        shutOutbox()
        negotiation = nil
        if link != .rejected { link = .offline }   // a rejection stays for status
        await stopDeviceWork()
        if let reason { lastError = reason }
    }

    func stopDeviceWork() async {
        book.reset()
        stopRunning()
        for (_, s) in streams { s.cancel() }
        streams = [:]
        wakeBudgetWaiters()
    }

    // MARK: Device plug and unplug

    func plug(_ newDevice: any USBDevice) async {
        if device != nil { await unplug() }
        device = newDevice
        book.newDevice()
        await announceIfReady()
    }

    /// Takes the device away: its transfers are cancelled and it is closed
    /// first (writes made durable, kernel drivers re-attached), then the VM
    /// is told with device_disconnect. A VM that does not read gets
    /// `limits.disconnectWriteTimeoutNanoseconds`, then its connection is closed.
    func unplug() async {
        guard let old = device else { return }
        device = nil
        await stopDeviceWork()
        await old.close()
        if link == .announced {
            link = .ready(ackPending: negotiation?.isActive(.deviceDisconnectAck) ?? false)
            let sent = await send(.deviceDisconnect, deadlineNanoseconds: limits.disconnectWriteTimeoutNanoseconds)
            if sent {
                // A write only queues the bytes; the VM's ack (when it has the
                // cap) says it has them, so a stop that closes the connection
                // next cannot lose them. Bounded like the write.
                await waitForDisconnectAck(nanoseconds: limits.disconnectWriteTimeoutNanoseconds)
                logger.info("device disconnected from the VM")
            } else {
                logger.warning("the VM did not take device_disconnect in time; closing its connection")
            }
        }
    }

    /// Waits, bounded, for the VM's device_disconnect_ack (or the end of
    /// the connection): before a stop closes it, and before a new connect.
    private func waitForDisconnectAck(nanoseconds: UInt64) async {
        let deadline = ContinuousClock.now + .nanoseconds(Int64(nanoseconds))
        while awaitingAck && writer != nil && ContinuousClock.now < deadline {
            await outsideBurst { try? await Task.sleep(nanoseconds: 5_000_000) }
        }
    }

    func announceIfReady() async {
        guard let device, case .ready(let ackPending) = link else { return }
        if ackPending {
            // The VM must acknowledge the last disconnect before a new connect.
            await waitForDisconnectAck(nanoseconds: limits.disconnectAckTimeoutNanoseconds)
            if link == .ready(ackPending: true) { link = .ready(ackPending: false) }   // timed out
            guard self.device === device, link == .ready(ackPending: false) else { return }
        }
        if let rules = peerFilter, await filterVerdict(rules, device) != .allowed {
            reject("the VM's usbredir filter does not allow this device")
            return
        }
        let config = await device.activeConfiguration
        compressible = !DeviceAnnouncement.hasIsochronous(config)
        link = .announced
        for m in await DeviceAnnouncement.all(device) { await send(m) }
        let d = device.descriptor
        logger.info("device connected to the VM", metadata: [
            "device": "\(Hex.id(d.vendorID)):\(Hex.id(d.productID))", "speed": "\(device.speed.rawValue)",
        ])
    }

    func reject(_ why: String) {
        link = .rejected
        lastError = why
        logger.error("\(why); not retrying until the profile changes or SIGHUP")
        // End the connection now: a device rejected when it is plugged would
        // otherwise leave `run` waiting for the VM's next packet.
        writer?.close()
    }

    func filterVerdict(_ rules: [USBRedirFilterRule], _ device: any USBDevice) async -> USBRedirFilterVerdict {
        let d = device.descriptor
        let interfaces = await device.activeConfiguration?.interfaces ?? []
        return USBRedirFilter.check(rules, deviceClass: d.deviceClass,
                                    interfaceClasses: interfaces.map { ($0.interfaceClass, $0.interfaceSubclass, $0.interfaceProtocol) },
                                    vendor: d.vendorID, product: d.productID, version: d.deviceVersion)
    }

    func nextStreamPacketID() -> UInt64 {
        streamPacketID &+= 1
        return streamPacketID
    }
}

