// Numbers of the usbredir protocol (usbredir's docs/usb-redirection-protocol.md,
// and usbredirproto.h, protocol version 0.7).

/// Which end of a usbredir connection a side plays.
/// The *host* owns the USB device; the *guest* (QEMU) is where the VM's USB stack lives.
public enum USBRedirRole: Sendable, Hashable {
    case host
    case guest

    public var peer: USBRedirRole { self == .host ? .guest : .host }
}

/// Packet types: control messages 0-27, data packets 100-104.
public enum USBRedirMessageType: UInt32, Sendable, CaseIterable {
    case hello = 0
    case deviceConnect = 1
    case deviceDisconnect = 2
    case reset = 3
    case interfaceInfo = 4
    case epInfo = 5
    case setConfiguration = 6
    case getConfiguration = 7
    case configurationStatus = 8
    case setAltSetting = 9
    case getAltSetting = 10
    case altSettingStatus = 11
    case startIsoStream = 12
    case stopIsoStream = 13
    case isoStreamStatus = 14
    case startInterruptReceiving = 15
    case stopInterruptReceiving = 16
    case interruptReceivingStatus = 17
    case allocBulkStreams = 18
    case freeBulkStreams = 19
    case bulkStreamsStatus = 20
    case cancelDataPacket = 21
    case filterReject = 22
    case filterFilter = 23
    case deviceDisconnectAck = 24
    case startBulkReceiving = 25
    case stopBulkReceiving = 26
    case bulkReceivingStatus = 27
    case controlPacket = 100
    case bulkPacket = 101
    case isoPacket = 102
    case interruptPacket = 103
    case bufferedBulkPacket = 104
}

/// Transfer and command statuses (`usb_redir_success` ...).
public enum USBRedirStatus: UInt8, Sendable, CaseIterable {
    case success = 0
    case cancelled = 1
    case invalid = 2
    case ioError = 3
    case stall = 4
    case timeout = 5
    case babble = 6
}

/// Device speed as device_connect carries it. Unknown is 255, not 4.
public enum USBRedirSpeed: UInt8, Sendable, CaseIterable {
    case low = 0
    case full = 1
    case high = 2
    case `super` = 3
    case unknown = 255
}

/// Endpoint transfer types in ep_info; the first four match the USB spec.
public enum USBRedirEndpointType: UInt8, Sendable, CaseIterable {
    case control = 0
    case iso = 1
    case bulk = 2
    case interrupt = 3
    case invalid = 255
}

/// Limits on what a peer can make us hold. Each is a named constant, as the
/// spec leaves them to implementations.
public enum USBRedirLimits {
    /// Largest data payload (and largest transfer length a data packet may ask
    /// for). The C library allows 128 MiB; QEMU's biggest transfers are about
    /// 1 MiB (usb-storage on xhci), so 16 MiB leaves room and bounds memory.
    public static let maxDataLength = 16 * 1024 * 1024
    /// hello's version string field is 64 bytes, NUL padded.
    public static let versionLength = 64
    /// interface_info and ep_info carry fixed arrays of 32 entries.
    public static let maxInterfaces = 32
    public static let endpointCount = 32
    /// Capability words we read from a hello; the spec has one (8 caps).
    public static let capabilityWords = 1
}

/// USB endpoint address to the 0..31 index used by ep_info arrays:
/// IN endpoints 16..31, OUT 0..15.
@inlinable
public func usbRedirEndpointIndex(_ address: UInt8) -> Int {
    Int(((address & 0x80) >> 3) | (address & 0x0f))
}

/// The 0..31 index back to an endpoint address.
@inlinable
public func usbRedirEndpointAddress(index: Int) -> UInt8 {
    UInt8(((index & 0x10) << 3) | (index & 0x0f))
}
