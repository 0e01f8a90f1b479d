import Foundation

/// The test's end of scripts/guest/ctl: runs shell scripts in a VM (the lab
/// host, the lab-host target) over a virtio-serial port whose QEMU chardev
/// is the unix socket `socketPath`. One request at a time:
/// "<id> <base64 script> <timeout>\n" out; the output, then
/// "\n@@CTL-END <id> <status>\n" back.
public final class ControlPort: @unchecked Sendable {
    public struct Result: CustomStringConvertible {
        public let status: Int32
        public let output: String
        public let seconds: Double
        public var description: String { "status \(status) after \(String(format: "%.2f", seconds)) s:\n\(output)" }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    public let socketPath: String
    private var fd: Int32 = -1
    private var pending: [UInt8] = []
    private var nextID = 1
    private let lock = NSLock()

    public init(socketPath: String) { self.socketPath = socketPath }
    deinit { if fd >= 0 { close(fd) } }

    /// Runs `script` with sh in the VM; the VM kills it after `timeout` s
    /// (status 124 or 143), and this gives up 15 s later (throws).
    @discardableResult
    public func run(_ script: String, timeout: Double = 60) throws -> Result {
        try lock.withLock {
            if fd < 0 { fd = try QMP.connect(socketPath); pending = [] }
            let id = nextID
            nextID += 1
            let start = Date()
            let line = "\(id) \(Data(script.utf8).base64EncodedString()) \(Int(timeout.rounded(.up)))\n"
            let bytes = Array(line.utf8)
            guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
                reset(); throw Failure(description: "ctl write: errno \(errno)")
            }
            let marker = Array("\n@@CTL-END \(id) ".utf8)
            let deadline = start.addingTimeInterval(timeout + 15)
            while true {
                if let r = pending.firstRange(of: marker), let eol = pending[r.upperBound...].firstIndex(of: 10) {
                    var output = String(decoding: pending[..<r.lowerBound], as: UTF8.self)
                    // Replies of earlier, abandoned requests come first: drop them.
                    if let stale = output.range(of: "@@CTL-END [0-9]+ [0-9]+\n", options: [.regularExpression, .backwards]) {
                        output = String(output[stale.upperBound...])
                    }
                    let status = Int32(String(decoding: pending[r.upperBound..<eol], as: UTF8.self)) ?? -1
                    pending.removeSubrange(..<(eol + 1))
                    return Result(status: status, output: output, seconds: Date().timeIntervalSince(start))
                }
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else {
                    throw Failure(description: "no reply from the VM within \(Int(timeout + 15)) s to:\n\(script)")
                }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, Int32(min(left, 1) * 1000)) > 0 else { continue }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = read(fd, &chunk, chunk.count)
                guard n > 0 else { reset(); throw Failure(description: "ctl socket closed (errno \(errno))") }
                pending += chunk[..<n]
            }
        }
    }

    /// Runs `script` and throws unless it exits 0; returns its output.
    @discardableResult
    public func check(_ script: String, timeout: Double = 60) throws -> String {
        let r = try run(script, timeout: timeout)
        guard r.status == 0 else { throw Failure(description: "`\(script)` failed, \(r)") }
        return r.output
    }

    /// Waits until the VM answers (its ctl loop runs); the seconds it took.
    /// A request sent before the VM opens its port waits in the socket, so
    /// one request does: the wait is its reply deadline.
    @discardableResult
    public func waitUntilServing(timeout: Double) throws -> Double {
        let r = try run("echo ctl-ok", timeout: max(timeout - 15, 5))
        guard r.output == "ctl-ok\n" else { throw Failure(description: "unexpected ctl reply: \(r)") }
        return r.seconds
    }

    /// Polls `script` until `condition` holds on its result; the seconds
    /// that took, or throws naming `what` after `timeout`.
    @discardableResult
    public func pollUntil(_ what: String, timeout: Double, every interval: Double = 0.3, _ script: String,
                     until condition: (Result) -> Bool) throws -> Double {
        let start = Date()
        var last: Result?
        while Date().timeIntervalSince(start) < timeout {
            let r = try run(script, timeout: 30)
            if condition(r) { return Date().timeIntervalSince(start) }
            last = r
            Thread.sleep(forTimeInterval: interval)
        }
        throw Failure(description: "timed out after \(timeout) s waiting until \(what); last: \(last.map(\.description) ?? "none")")
    }

    private func reset() {
        if fd >= 0 { close(fd) }
        fd = -1
        pending = []
    }
}
