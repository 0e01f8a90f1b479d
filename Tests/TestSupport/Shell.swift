import Foundation

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
public func runCommand(_ executable: String, _ arguments: [String], cwd: String? = nil) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    while p.isRunning { Thread.sleep(forTimeInterval: 0.01) }   // waitUntilExit can hang here
    guard p.terminationStatus == 0 else { throw CommandError(command: ([executable] + arguments).joined(separator: " "), output: out) }
    return out
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
/// (standard output and error together), whatever the status.
public func runCommandStatus(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    while p.isRunning { Thread.sleep(forTimeInterval: 0.01) }
    return (p.terminationStatus, out)
}
