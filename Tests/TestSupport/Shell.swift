import Foundation

/// Runs a command to completion; throws with its output when it fails, or
/// when it is still running after `timeout` seconds (it is then killed).
@discardableResult
public func runCommand(_ executable: String, _ arguments: [String], cwd: String? = nil,
                       timeout: Double = defaultCommandTimeout) throws -> String {
    let r = try runWithDeadline(executable, arguments, cwd: cwd, timeout: timeout)
    guard r.status == 0 else { throw CommandError(command: ([executable] + arguments).joined(separator: " "), output: r.output) }
    return r.output
}

/// How long a helper command may run before the test fails: generous, as
/// building the guest the first time downloads and unpacks a kernel.
public let defaultCommandTimeout: Double = 600

/// Runs a child with its output collected as it comes; kills it (SIGKILL)
/// and throws CommandError when it outlives `timeout`.
private func runWithDeadline(_ executable: String, _ arguments: [String], cwd: String?,
                             timeout: Double) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    let output = ChildOutput()
    pipe.fileHandleForReading.readabilityHandler = { handle in
        let data = handle.availableData
        if data.isEmpty { output.finish() } else { output.append(data) }
    }
    defer { pipe.fileHandleForReading.readabilityHandler = nil }
    try p.run()
    let command = ([executable] + arguments).joined(separator: " ")
    let deadline = Date().addingTimeInterval(timeout)
    // /proc, not p.isRunning: Foundation's reaping from concurrency threads is not reliable.
    while processIsAlive(p.processIdentifier) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
    if processIsAlive(p.processIdentifier) {
        kill(p.processIdentifier, SIGKILL)
        throw CommandError(command: command, output: "killed: still running after \(timeout) s\n" + output.text)
    }
    // The output ends when the last writer closes it (a grandchild may still hold it).
    let drained = Date().addingTimeInterval(5)
    while !output.finished && Date() < drained { Thread.sleep(forTimeInterval: 0.005) }
    let reaped = Date().addingTimeInterval(5)
    while p.isRunning && Date() < reaped { Thread.sleep(forTimeInterval: 0.01) }   // waitUntilExit can hang here
    guard !p.isRunning else { throw CommandError(command: command, output: "exit status not reaped\n" + output.text) }
    return (p.terminationStatus, output.text)
}

/// Bytes a child wrote, gathered from a readability handler.
final class ChildOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var ended = false
    func append(_ d: Data) { lock.withLock { data.append(d) } }
    func finish() { lock.withLock { ended = true } }
    var finished: Bool { lock.withLock { ended } }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}

public struct CommandError: Error, CustomStringConvertible {
    public var command: String
    public var output: String
    public var description: String { "\(command) failed:\n\(output)" }
}

public func makeTemporaryDirectory(_ prefix: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A CA and a server certificate signed by it, in the layout QEMU's
/// `x509-dir` expects (ca-cert.pem, server-cert.pem, server-key.pem).
public func makeTestPKI(in dir: URL, commonName: String = "localhost") throws {
    let o = "/usr/bin/openssl"
    let d = dir.path
    try runCommand(o, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=usbredir test CA",
                       "-keyout", "\(d)/ca-key.pem", "-out", "\(d)/ca-cert.pem"])
    try runCommand(o, ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(commonName)",
                       "-keyout", "\(d)/server-key.pem", "-out", "\(d)/server.csr"])
    try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: "\(d)/ext.cnf", atomically: true, encoding: .utf8)
    try runCommand(o, ["x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca-cert.pem", "-CAkey", "\(d)/ca-key.pem",
                       "-CAcreateserial", "-days", "2", "-extfile", "\(d)/ext.cnf", "-out", "\(d)/server-cert.pem"])
}

/// True while the process exists and is not a zombie (reads /proc/PID/stat).
public func processIsAlive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)...].first
    return state != "Z" && state != "X"
}

/// A product built next to the running test bundle (e.g. the `usbredir` CLI).
public func builtProduct(_ name: String) -> String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    return bundle.appendingPathComponent(name).path
}

/// A background process whose standard error goes to a file, for tests
/// that run the CLI for a while.
public final class BackgroundProcess: @unchecked Sendable {
    public let process = Process()
    public let logFile: URL

    /// `environment`: the child's whole environment (nil: this process's).
    public init(_ executable: String, _ arguments: [String], logFile: URL, environment: [String: String]? = nil) throws {
        self.logFile = logFile
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let handle = try FileHandle(forWritingTo: logFile)
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
    }

    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }
    public var isAlive: Bool { processIsAlive(process.processIdentifier) }

    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for exit; returns the exit status, or nil on timeout.
    public func waitForExit(timeout: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// Runs a command to completion and returns its exit status and output
/// (standard output and error together), whatever the status; throws only
/// when it cannot start or outlives `timeout` (then it is killed).
public func runCommandStatus(_ executable: String, _ arguments: [String],
                             timeout: Double = defaultCommandTimeout) throws -> (status: Int32, output: String) {
    try runWithDeadline(executable, arguments, cwd: nil, timeout: timeout)
}
