import Profile
import Session
import Transport

/// Connects one assignment's usbredir channel the way its endpoint wants
/// (SPICE channel, raw connect, or listen) and runs the session on it.
struct ChannelConnector: Sendable {
    let endpoint: Endpoint
    let assignmentName: String
    let link: SpiceEndpointLink?
    let session: RedirectionSession

    /// Returns when the connection ends. For `listen`, each peer in turn is
    /// served; `onIdle` marks the wait for the next one.
    func serve(onConnected: @escaping @Sendable (UInt8?) async -> Void,
               onIdle: @escaping @Sendable () async -> Void,
               onListening: @escaping @Sendable (RawUSBRedirListener) async -> Void) async throws -> SessionEnd {
        let a = endpoint.address
        let address = EndpointAddress(host: a.host, port: a.port)
        let session = self.session
        switch endpoint.kind {
        case .spice, .spiceTLS:
            guard let link else { throw TransportError.configuration("no SPICE link for '\(endpoint.name)'") }
            let spice = try await link.session()
            guard let wanted = await link.channel(for: assignmentName, available: spice.usbredirChannelIDs) else {
                throw TransportError.noFreeChannel(available: spice.usbredirChannelIDs)
            }
            return try await spice.withUSBRedirChannel(pinned: wanted) { connection, id in
                await onConnected(id)
                return await session.run(connection)
            }
        case .usbredir:
            return try await RawUSBRedir.withConnection(to: address) { connection in
                await onConnected(nil)
                return await session.run(connection)
            }
        case .listen:
            let listener = try await RawUSBRedirListener.bind(address)
            await onListening(listener)
            defer { listener.close() }
            try await listener.serve { connection in
                await onConnected(nil)
                _ = await session.run(connection)
                await onIdle()
            }
            return .transportClosed(.closedLocally)
        }
    }
}
