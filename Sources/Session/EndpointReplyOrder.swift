import NIOCore
import USBRedirProtocol

/// The replies of one endpoint, released in the order its packets came.
/// A device may finish them in another order (a cancelled URB in the middle
/// of a kernel queue ends first), but QEMU completes an endpoint's packets
/// in its own queue's order and aborts when told otherwise
/// (usb_packet_complete_one), and a cancelled transfer's reply must reach it
/// before the reply of a new transfer that reuses its id. Transfers are
/// known by the engine's serial number, never by the VM's packet id.
struct EndpointReplyOrder {
    struct Reply {
        var message: USBRedirMessage
        var packetID: UInt64
        var permit: InFlightBudget.Permit?
    }

    /// Serials of the transfers not answered yet, oldest first.
    private var waiting = CircularBuffer<UInt64>()
    /// Replies that finished before an older transfer of the endpoint.
    private var early: [UInt64: Reply] = [:]

    var isEmpty: Bool { waiting.isEmpty }

    mutating func register(_ serial: UInt64) {
        waiting.append(serial)
    }

    /// Records `reply` for `serial` and hands over every reply now due, in
    /// order (none while an older transfer is still running).
    mutating func finish(_ serial: UInt64, _ reply: Reply, _ send: (Reply) -> Void) {
        guard waiting.first == serial else {
            early[serial] = reply
            return
        }
        waiting.removeFirst()
        send(reply)
        while !early.isEmpty, let next = waiting.first, let due = early.removeValue(forKey: next) {
            waiting.removeFirst()
            send(due)
        }
    }
}
