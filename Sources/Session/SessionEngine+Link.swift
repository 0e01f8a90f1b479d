/// Where the engine stands with the VM, as one value: it was four flags
/// (announced, awaitingAck, rejected, phase) that had to be kept in step.
enum LinkState: Equatable, Sendable {
    /// No connection to the VM.
    case offline
    /// A connection, without the VM's hello yet.
    case awaitingHello
    /// Hello exchanged; the device (if any) is not announced. `ackPending`:
    /// the last device_disconnect waits for the VM's ack before a new connect.
    case ready(ackPending: Bool)
    /// The device is announced to the VM.
    case announced
    /// The VM's filter refused the device. Nothing is announced until the
    /// next connection; it outlives the connection so status can show it.
    case rejected
}

extension SessionEngine {
    /// What status reports, derived from the link and the device.
    var phase: SessionPhase {
        switch link {
        case .rejected: .rejected
        case .announced: .connected
        case .offline, .awaitingHello, .ready: device == nil ? .waitingForDevice : .connecting
        }
    }

    var rejected: Bool { link == .rejected }

    /// A device_disconnect waits for the VM's ack.
    var awaitingAck: Bool { link == .ready(ackPending: true) }
}
