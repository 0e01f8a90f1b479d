// Process, /proc and statistics helpers for the system benchmarks.
import Foundation

/// Progress for the person waiting: one line on stderr, at once.
func progress(_ line: String) {
    fflush(nil)   // the results printed so far come first (stdout is a buffered stream)
    FileHandle.standardError.write(Data(("bench: " + line + "\n").utf8))
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A child process; its stdout is captured when asked, stderr goes to a file
/// (or is inherited).
final class Child {
    let process = Process()
    let stdoutPipe: Pipe?
    let stdinPipe: Pipe?

    init(_ executable: String, _ arguments: [String], captureStdout: Bool = false,
         stdin: Bool = false, stderrPath: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        stdoutPipe = captureStdout ? Pipe() : nil
        stdinPipe = stdin ? Pipe() : nil
        if let stdoutPipe { process.standardOutput = stdoutPipe }
        if let stdinPipe { process.standardInput = stdinPipe }
        if let stderrPath {
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: stderrPath)
        }
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Reads stdout to its end and waits for the exit.
    func output() -> (status: Int32, text: String) {
        let data = stdoutPipe?.fileHandleForReading.readDataToEndOfFile() ?? Data()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Reads stdout lines until one has `prefix` (or EOF, or the timeout).
    func waitForLine(prefix: String, timeout: Double) -> String? {
        guard let handle = stdoutPipe?.fileHandleForReading else { return nil }
        let deadline = Date().addingTimeInterval(timeout)
        var pending = ""
        while Date() < deadline {
            var pfd = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 200) >= 0 else { return nil }
            if pfd.revents == 0 { if !process.isRunning { return nil }; continue }
            let data = handle.availableData
            if data.isEmpty { return nil }
            pending += String(decoding: data, as: UTF8.self)
            while let nl = pending.firstIndex(of: "\n") {
                let line = String(pending[..<nl])
                pending = String(pending[pending.index(after: nl)...])
                if line.hasPrefix(prefix) { return line }
            }
        }
        return nil
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 5) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
func freePorts(_ n: Int) throws -> [Int] {
    var fds: [Int32] = []
    defer { fds.forEach { close($0) } }
    var ports: [Int] = []
    for _ in 0..<n {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket failed") }
        fds.append(fd)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw BenchError("bind failed") }
        ports.append(Int(UInt16(bigEndian: addr.sin_port)))
    }
    return ports
}

/// Waits until something accepts on 127.0.0.1:port.
func waitForListener(port: Int, timeout: Double) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        close(fd)
        if ok { return true }
        usleep(50_000)
    }
    return false
}

enum ProcStat {
    /// A field of /proc/PID/status in kB (VmRSS, VmHWM), or nil.
    static func statusKB(pid: Int32, _ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// CPU time of the whole process in nanoseconds: the sum of its threads'
    /// /proc/PID/task/TID/schedstat run times (ns resolution; utime+stime of
    /// /proc/PID/stat count 10 ms ticks, too coarse for an idle process).
    /// Per thread, so a delta can skip threads that ended in between (a sum
    /// would go down when one does).
    static func cpuNanosecondsByThread(pid: Int32) -> [String: UInt64]? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var byThread: [String: UInt64] = [:]
        for t in tasks {
            guard let s = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/schedstat", encoding: .utf8),
                  let first = s.split(separator: " ").first, let ns = UInt64(first) else { continue }
            byThread[t] = ns
        }
        return byThread
    }

    /// On-CPU nanoseconds between two samples: threads alive at the end count
    /// what they ran since the first sample (or since they started).
    static func cpuDelta(_ a: [String: UInt64], _ b: [String: UInt64]) -> UInt64 {
        b.reduce(0) { sum, e in sum + (e.value >= (a[e.key] ?? 0) ? e.value - (a[e.key] ?? 0) : 0) }
    }

    /// utime+stime of the whole process (threads that ended included), in seconds.
    static func cpuSecondsFromStat(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let f = text[text.index(after: close)...].split(separator: " ")
        // f[0] is field 3 (state); utime and stime are fields 14 and 15.
        guard f.count > 12, let u = Double(f[11]), let s = Double(f[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return .nan }
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
func fmt(_ v: Double, _ decimals: Int = 1) -> String { v.isFinite ? String(format: "%.\(decimals)f", v) : "n/a" }

/// key=value fields of one result line.
func fields(_ line: Substring) -> [String: String] {
    var d: [String: String] = [:]
    for word in line.split(separator: " ") {
        guard let eq = word.firstIndex(of: "=") else { continue }
        d[String(word[..<eq])] = String(word[word.index(after: eq)...])
    }
    return d
}
