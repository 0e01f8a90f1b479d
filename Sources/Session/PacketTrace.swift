import Common
import Logging
import USBRedirProtocol

/// At log level trace, one line per usbredir packet each way (type,
/// endpoint, id, length, status): what a person debugging a device needs.
/// Rate-limited, so a bulk stream at full speed cannot flood the log or slow
/// the session: at most `burst` lines at once and `perSecond` after that;
/// what was left out is counted in the next line that goes out.
struct PacketTrace {
    static let perSecond = 200.0
    static let burst = 400.0

    /// Whether trace is on, read from the logger once per read from the VM
    /// (the level is live: an edit of `log:` reaches the running session).
    private(set) var enabled = false
    private var tokens = Self.burst
    private var refilled = ContinuousClock.now
    private var skipped = 0

    mutating func refresh(_ logger: Logger) {
        enabled = logger.logLevel <= .trace
    }

    mutating func record(_ direction: String, _ message: USBRedirMessage, id: UInt64, logger: Logger) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let elapsed = now - refilled
        refilled = now
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        tokens = min(Self.burst, tokens + seconds * Self.perSecond)
        guard tokens >= 1 else {
            skipped += 1
            return
        }
        tokens -= 1
        var metadata = Self.fields(message)
        metadata["id"] = "\(id)"
        if skipped > 0 {
            metadata["untraced"] = "\(skipped)"
            skipped = 0
        }
        logger.trace("\(direction) \(message.type)", metadata: metadata)
    }

    /// The fields worth a line: endpoint, length and status of data packets.
    static func fields(_ message: USBRedirMessage) -> Logger.Metadata {
        switch message {
        case .controlPacket(let p):
            ["ep": "0x\(Hex.padded(p.endpoint, digits: 2))", "request": "\(Hex.padded(p.requestType, digits: 2)):\(Hex.padded(p.request, digits: 2))",
             "value": "\(Hex.id(p.value))", "index": "\(Hex.id(p.index))", "length": "\(p.length)", "status": "\(p.status)"]
        case .bulkPacket(let p):
            ["ep": "0x\(Hex.padded(p.endpoint, digits: 2))", "length": "\(p.length)", "stream": "\(p.streamID)", "status": "\(p.status)"]
        case .interruptPacket(let p):
            ["ep": "0x\(Hex.padded(p.endpoint, digits: 2))", "length": "\(p.length)", "status": "\(p.status)"]
        case .isoPacket(let p):
            ["ep": "0x\(Hex.padded(p.endpoint, digits: 2))", "length": "\(p.length)", "status": "\(p.status)"]
        case .bufferedBulkPacket(let p):
            ["ep": "0x\(Hex.padded(p.endpoint, digits: 2))", "length": "\(p.length)", "status": "\(p.status)"]
        default:
            [:]
        }
    }
}
