import USBRedirProtocol

/// What the VM says about the device as a whole: its usbredir filter, a
/// rejection, the ack of a disconnect.
extension SessionEngine {
    func setPeerFilter(_ rules: String) {
        do {
            peerFilter = try USBRedirFilter.parse(rules)
        } catch {
            logger.warning("ignoring the VM's unreadable usbredir filter: \(error)")
        }
    }

    func rejectByVM() {
        reject("the VM rejected the device (usbredir filter_reject)")
    }

    func acknowledgeDisconnect() {
        if link == .ready(ackPending: true) { link = .ready(ackPending: false) }
    }
}
