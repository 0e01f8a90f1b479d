import Common
import Devices
import NIOCore
import USBRedirProtocol

extension SessionEngine {
    /// Counts and traces a packet from the VM, once, whichever path handles it.
    func note(_ packet: USBRedirPacket) {
        counters.packetsReceived += 1
        trace.record("from VM", packet.message, id: packet.id, logger: logger)
    }

    /// Handles a packet in this turn when it needs no waiting (a transfer
    /// with room in the budget, a cancel, the VM's filter or ack): false
    /// when it does, with nothing done.
    func handleInTurn(_ packet: USBRedirPacket) -> Bool {
        let id = packet.id
        switch packet.message {
        case .controlPacket(let p): return submitInTurn(id: id, kind: .control(p), reserving: Int(p.length))
        case .bulkPacket(let p): return submitInTurn(id: id, kind: .bulk(p), reserving: Int(p.length))
        case .interruptPacket(let p): return submitInTurn(id: id, kind: .interrupt(p), reserving: Int(p.length))
        case .isoPacket(let p): return submitInTurn(id: id, kind: .isoOut(p), reserving: Int(p.length))
        case .cancelDataPacket: cancel(id)
        case .filterFilter(let f): setPeerFilter(f.rules)
        case .deviceDisconnectAck: acknowledgeDisconnect()
        default: return false
        }
        return true
    }

    /// Handles one packet from the VM (`note`d already), waiting where it
    /// must. Returns an end when the session must stop.
    func handle(_ packet: USBRedirPacket, negotiation current: USBRedirNegotiation) async -> SessionEnd? {
        if handleInTurn(packet) { return rejected ? .rejectedByFilter : nil }
        let id = packet.id
        switch packet.message {
        case .hello(let hello):
            negotiation = current
            if link == .awaitingHello { link = .ready(ackPending: false) }
            logger.debug("peer hello", metadata: ["version": "\(hello.version)", "caps": "\(hello.capabilities.rawValue)"])
            await send(.hello(.init(version: USBRedirVersion.hello, capabilities: Self.capabilities)))
            await announceIfReady()
        case .reset:
            if let device { _ = await device.reset() }
        case .setConfiguration(let m):
            await setConfiguration(m.configuration, id: id)
        case .getConfiguration:
            let value = await device?.activeConfiguration?.value ?? 0
            await send(.configurationStatus(.init(status: device == nil ? USBRedirStatus.ioError.rawValue : 0,
                                                  configuration: value)), id: id)
        case .setAltSetting(let m):
            await setAltSetting(interface: m.interface, alt: m.alt, id: id)
        case .getAltSetting(let m):
            let alt = await device?.altSetting(interface: m.interface)
            await send(.altSettingStatus(.init(status: alt == nil ? USBRedirStatus.invalid.rawValue : 0,
                                               interface: m.interface, alt: alt ?? 0)), id: id)
        case .filterReject:
            rejectByVM()
            return .rejectedByFilter
        case .controlPacket(let p):
            await submit(id: id, kind: .control(p), reserving: Int(p.length))
        case .bulkPacket(let p):
            await submit(id: id, kind: .bulk(p), reserving: Int(p.length))
        case .interruptPacket(let p):
            await submit(id: id, kind: .interrupt(p), reserving: Int(p.length))
        case .isoPacket(let p):
            await submit(id: id, kind: .isoOut(p), reserving: Int(p.length))
        case .cancelDataPacket, .filterFilter, .deviceDisconnectAck:
            break   // handled in turn
        case .startInterruptReceiving, .stopInterruptReceiving, .startIsoStream, .stopIsoStream,
             .startBulkReceiving, .stopBulkReceiving, .allocBulkStreams, .freeBulkStreams:
            await handleStreamControl(packet.message, id: id)
        case .deviceConnect, .deviceDisconnect, .interfaceInfo, .epInfo, .configurationStatus,
             .altSettingStatus, .isoStreamStatus, .interruptReceivingStatus, .bulkStreamsStatus,
             .bulkReceivingStatus, .bufferedBulkPacket:
            break   // host-to-guest messages; the parser already refuses them from a guest
        }
        return rejected ? .rejectedByFilter : nil
    }

    private func setConfiguration(_ value: UInt8, id: UInt64) async {
        guard let device else {
            await send(.configurationStatus(.init(status: USBRedirStatus.ioError.rawValue, configuration: 0)), id: id)
            return
        }
        let status = await device.setConfiguration(value)
        // The VM learns the new interfaces and endpoints before the status.
        let config = await device.activeConfiguration
        noteIsochronous(config)
        await send(DeviceAnnouncement.interfaceInfo(config))
        await send(DeviceAnnouncement.epInfo(config, maxPacketSize0: device.descriptor.maxPacketSize0))
        await send(.configurationStatus(.init(status: WireValues.status(status).rawValue,
                                              configuration: config?.value ?? 0)), id: id)
    }

    private func setAltSetting(interface: UInt8, alt: UInt8, id: UInt64) async {
        guard let device else {
            await send(.altSettingStatus(.init(status: USBRedirStatus.ioError.rawValue, interface: interface, alt: 0)), id: id)
            return
        }
        let status = await device.setAltSetting(interface: interface, alt: alt)
        let config = await device.activeConfiguration
        noteIsochronous(config)
        await send(DeviceAnnouncement.epInfo(config, maxPacketSize0: device.descriptor.maxPacketSize0))
        let current = await device.altSetting(interface: interface) ?? 0
        await send(.altSettingStatus(.init(status: WireValues.status(status).rawValue,
                                           interface: interface, alt: current)), id: id)
    }

    /// Isochronous endpoints often appear only in an alternate setting (audio,
    /// video): once the device shows one, its traffic is no longer marked
    /// compressible (until the next device is announced).
    private func noteIsochronous(_ config: USBConfigurationDescriptor?) {
        if DeviceAnnouncement.hasIsochronous(config) { compressible = false }
    }
}
