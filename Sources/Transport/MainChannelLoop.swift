import Logging
import NIOCore

/// Runs the SPICE main channel: link, MAIN_INIT, ATTACH_CHANNELS and
/// CHANNELS_LIST, then keeps answering until the server closes it.
struct MainChannelLoop {
    let configuration: SpiceEndpointConfiguration
    let logger: Logger

    /// Returns why the channel ended; fulfils `ready` once the channel list is known.
    func run(_ channel: ByteChannel, ready: EventLoopPromise<(UInt32, [UInt8])>) async -> TransportError {
        var wasReady = false
        do {
            try await channel.executeThenClose { inbound, outbound in
                let reader = ConnectionReader(inbound)
                let link = SpiceLink(connectionID: 0, channelType: .main, channelID: 0, channelCaps: [],
                                     password: configuration.password)
                let linked = try await link.run(reader: reader, outbound: outbound)
                let writer = SpiceMessageWriter(outbound: outbound, miniHeader: linked.miniHeader)
                let messages = SpiceChannelReader(reader: reader, writer: writer, logger: logger)
                let sessionID = try await readSessionID(messages)
                try await writer.send(type: Spice.msgcMainAttachChannels)
                let channels = try await readUSBRedirChannels(messages)
                wasReady = true
                ready.succeed((sessionID, channels))
                while true { _ = try await messages.next() }   // PINGs are answered inside
            }
        } catch let error as TransportError where !wasReady || error != .closedByPeer {
            return error
        } catch {
            if !wasReady { return error.asTransportError }
        }
        return await whyClosed()
    }

    /// QEMU drops the earlier client when another connects, but keeps
    /// listening; a VM that went away refuses connections. A dying process
    /// closes our connection a moment before its listening socket, so the
    /// probe waits that moment out and must succeed twice. Around the probes
    /// the server's clients are counted three times: a client that displaced
    /// us is there each time, while the server's ends of our own channels go
    /// (spice-server closes them one by one).
    private func whyClosed() async -> TransportError {
        var othersConnected = SpiceClientCensus.otherClientsConnected(to: configuration.server)
        for _ in 0..<2 {
            try? await Task.sleep(nanoseconds: Self.probeDelayNanoseconds)
            let now = SpiceClientCensus.otherClientsConnected(to: configuration.server)
            othersConnected = othersConnected.flatMap { before in now.map { before && $0 } }
            guard await isServerStillThere() else { return .closedByPeer }
        }
        return whyDropped(othersConnected: othersConnected)
    }

    /// The server is up but dropped us. A client that displaced us is
    /// connected to it now; with none, the server itself dropped us
    /// (`set_password ... disconnect`, a restart) and linking again is right.
    private func whyDropped(othersConnected: Bool?) -> TransportError {
        switch othersConnected {
        case false?:
            logger.info("SPICE server dropped us and no other client is connected: linking again",
                        metadata: ["endpoint": "\(configuration.server)"])
            return .droppedByServer
        case true?:
            return .displaced
        case nil:
            logger.warning("SPICE server dropped us; its clients are not visible from this host, so it counts as displaced",
                           metadata: ["endpoint": "\(configuration.server)"])
            return .displaced
        }
    }

    private func readSessionID(_ messages: SpiceChannelReader) async throws -> UInt32 {
        while true {
            var m = try await messages.next()
            if m.type == Spice.msgMainInit {
                guard let id = m.body.readInteger(endianness: .little, as: UInt32.self) else {
                    throw TransportError.protocolViolation("short MAIN_INIT")
                }
                return id
            }
        }
    }

    private func readUSBRedirChannels(_ messages: SpiceChannelReader) async throws -> [UInt8] {
        while true {
            let m = try await messages.next()
            guard m.type == Spice.msgMainChannelsList else { continue }
            return try SpiceWire.usbredirChannels(m.body)
        }
    }

    /// A unix-socket server is there while its listening socket is (a
    /// connection to it would itself be counted as a client for a moment); a
    /// TCP server while it accepts a connection.
    private func isServerStillThere() async -> Bool {
        if let listening = SpiceClientCensus.isListening(configuration.server) { return listening }
        guard let probe = try? await TCPConnector.connect(to: configuration.server) else { return false }
        try? await probe.channel.close()
        return true
    }

    static let probeDelayNanoseconds: UInt64 = 100_000_000
}
