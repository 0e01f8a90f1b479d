/// The eight usbredir capabilities, by bit number.
public enum USBRedirCapability: Int, Sendable, CaseIterable {
    case bulkStreams = 0
    case connectDeviceVersion = 1
    case filter = 2
    case deviceDisconnectAck = 3
    case epInfoMaxPacketSize = 4
    case ids64Bit = 5
    case bulkLength32Bit = 6
    case bulkReceiving = 7
}

/// A set of capabilities, as the caps word of a hello carries it.
public struct USBRedirCapabilities: Sendable, Hashable {
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(_ caps: [USBRedirCapability]) {
        self.rawValue = caps.reduce(0) { $0 | (1 << UInt32($1.rawValue)) }
    }

    public static let all = USBRedirCapabilities(USBRedirCapability.allCases)
    public static let none = USBRedirCapabilities(rawValue: 0)

    public func contains(_ cap: USBRedirCapability) -> Bool {
        rawValue & (1 << UInt32(cap.rawValue)) != 0
    }

    public mutating func insert(_ cap: USBRedirCapability) {
        rawValue |= 1 << UInt32(cap.rawValue)
    }

    public mutating func remove(_ cap: USBRedirCapability) {
        rawValue &= ~(1 << UInt32(cap.rawValue))
    }
}

/// What both ends agreed on. A capability is active only when both have it;
/// until the peer's hello arrives nothing is active (so hello itself always
/// travels with a 32-bit id header).
public struct USBRedirNegotiation: Sendable, Hashable {
    public let role: USBRedirRole
    public let ours: USBRedirCapabilities
    public private(set) var peer: USBRedirCapabilities?

    public init(role: USBRedirRole, ours: USBRedirCapabilities, peer: USBRedirCapabilities? = nil) {
        self.role = role
        self.ours = ours
        self.peer = peer
    }

    public var hasPeerHello: Bool { peer != nil }

    public func isActive(_ cap: USBRedirCapability) -> Bool {
        guard let peer, ours.contains(cap), peer.contains(cap) else { return false }
        // As usbredirparser_verify_caps: a side announcing bulk_streams without
        // ep_info_max_packet_size is taken not to have bulk_streams (max_streams
        // follows max_packet_size in ep_info), so ep_info is 96 bytes, not 288.
        if cap == .bulkStreams {
            return ours.contains(.epInfoMaxPacketSize) && peer.contains(.epInfoMaxPacketSize)
        }
        return true
    }

    /// Header size: 16 bytes with 64-bit ids, else 12.
    public var headerLength: Int { isActive(.ids64Bit) ? 16 : 12 }

    public mutating func recordPeerHello(_ caps: USBRedirCapabilities) {
        peer = caps
    }
}
