import NIOConcurrencyHelpers
import Devices
import Transport
import USBRedirProtocol

/// Bounds on what the VM can make one session hold (design: bound
/// everything a peer controls). Reading from the VM pauses while a bound is
/// reached, so the transport's back-pressure reaches the VM.
public struct SessionLimits: Sendable {
    public var maxTransfersInFlight = 64
    /// One byte budget for the whole session: transfers in flight (OUT data
    /// held, IN lengths asked), their replies until written, and each
    /// receiving stream's packet from the device read until it is written.
    public var maxBytesInFlight = 64 * 1024 * 1024
    /// Longest single transfer (IN request length or OUT data).
    public var maxTransferLength = USBRedirLimits.maxDataLength
    /// How long an unplugged device waits for device_disconnect_ack.
    public var disconnectAckTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// How long a new connection may go without the peer's hello.
    public var helloTimeoutNanoseconds: UInt64 = 10_000_000_000
    /// How long the device_disconnect write may take before the connection
    /// is closed (a VM that stopped reading must not hold up a stop).
    public var disconnectWriteTimeoutNanoseconds: UInt64 = 1_000_000_000

    public init() {}
}

/// Counters that run from the start of the session object and survive reconnects.
/// IN is device to VM, OUT is VM to device.
public struct SessionCounters: Sendable, Equatable {
    public var bytesIn = 0
    public var transfersIn = 0
    public var bytesOut = 0
    public var transfersOut = 0
    /// Packets from the VM, for diagnostics.
    public var packetsReceived = 0
    /// Transfers answered with a failure, by the status the VM was sent
    /// ("stall", "ioerror"...); bumped on failures only, off the fast path.
    public var errors: [String: Int] = [:]
    /// Transfers the VM asked for and has no answer to yet (a gauge, taken
    /// when the counters are read).
    public var transfersInFlight = 0

    public init() {}
}

/// Where a session stands, as status reports it.
public enum SessionPhase: String, Sendable {
    /// Connected to the VM, no device plugged.
    case waitingForDevice = "waiting-for-device"
    /// Waiting for the VM's hello, or announcing the device.
    case connecting
    case connected
    /// The VM's usbredir filter refused the device; not retried until told.
    case rejected
}

/// Why `run` returned.
public enum SessionEnd: Sendable, Equatable {
    /// The transport closed (the error says why: peer closed, displaced...).
    case transportClosed(TransportError)
    /// The VM sent bytes that are not valid usbredir; the connection was closed.
    case protocolError(String)
    /// The VM's filter rejected the device.
    case rejectedByFilter
}

extension SessionEnd: CustomStringConvertible {
    public var description: String {
        switch self {
        case .transportClosed(let why): why.description
        case .protocolError(let why): "malformed usbredir from the VM: \(why)"
        case .rejectedByFilter: "rejected by the VM's usbredir filter"
        }
    }
}

/// Device-side values (Devices' status and speed enums) as the usbredir
/// wire writes them.
enum WireValues {
    /// The name metrics give a wire status (`usbredir_transfer_errors_total`).
    static func name(_ s: USBRedirStatus) -> String {
        switch s {
        case .success: "success"
        case .cancelled: "cancelled"
        case .invalid: "invalid"
        case .ioError: "ioerror"
        case .stall: "stall"
        case .timeout: "timeout"
        case .babble: "babble"
        }
    }

    static func status(_ s: USBTransferStatus) -> USBRedirStatus {
        switch s {
        case .success: .success
        case .stall: .stall
        case .timeout: .timeout
        case .babble: .babble
        case .ioError, .noDevice: .ioError
        case .cancelled: .cancelled
        case .invalid: .invalid
        }
    }

    static func speed(_ s: USBSpeed) -> USBRedirSpeed {
        switch s {
        case .low: .low
        case .full: .full
        case .high: .high
        case .super: .super
        }
    }
}

/// A flag set once from any thread (a watchdog) and read by its owner.
final class ExpiryFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    func set() { value.withLockedValue { $0 = true } }
    var isSet: Bool { value.withLockedValue { $0 } }
}
