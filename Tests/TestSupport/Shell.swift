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
/// and throws CommandError when it outlives `timeout`. Spawned, read and
/// reaped here (posix_spawn, poll, waitpid) rather than by Foundation's
/// Process, whose exit and end-of-output notices come through its manager
/// thread and dispatch: under load either came seconds late, and a timed
/// test that polls a command (`usbredir status`) saw a 5 s stall.
private func runWithDeadline(_ executable: String, _ arguments: [String], cwd: String?,
                             timeout: Double) throws -> (status: Int32, output: String) {
    let command = ([executable] + arguments).joined(separator: " ")
    let child = try SpawnedChild(executable, arguments, cwd: cwd, command: command)
    defer { close(child.output) }
    let deadline = Date().addingTimeInterval(timeout)
    var output = Data()
    var status: Int32?
    // Read until the output ends. A grandchild may hold the output open
    // after the child exits: then what is there is read, and no more.
    while true {
        let ended = readAvailable(child.output, into: &output, waitMilliseconds: status == nil ? 20 : 100)
        if ended || (status != nil && !hasInput(child.output)) { break }
        if status == nil { status = child.exitStatus() }
        if status == nil && Date() >= deadline {
            kill(child.pid, SIGKILL)
            _ = child.waitForExit()
            throw CommandError(command: command, output: "killed: still running after \(timeout) s\n"
                               + String(decoding: output, as: UTF8.self))
        }
    }
    return (status ?? child.waitForExit(), String(decoding: output, as: UTF8.self))
}

/// Reads what `fd` has within `waitMilliseconds`; true at end of input.
private func readAvailable(_ fd: Int32, into data: inout Data, waitMilliseconds: Int32) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&p, 1, waitMilliseconds) > 0 else { return false }
    var buffer = [UInt8](repeating: 0, count: 65536)
    let n = read(fd, &buffer, buffer.count)
    if n > 0 { data.append(buffer, count: n); return false }
    return n == 0 || (errno != EINTR && errno != EAGAIN)
}

private func hasInput(_ fd: Int32) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&p, 1, 0) > 0
}

/// A child started with posix_spawn: standard input from /dev/null, output
/// and error into one pipe (close-on-exec in this process, so no other
/// child inherits it and holds its end open).
private struct SpawnedChild {
    let pid: pid_t
    let output: Int32

    init(_ executable: String, _ arguments: [String], cwd: String?, command: String) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw CommandError(command: command, output: "pipe: \(String(cString: strerror(errno)))")
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        // Default signal handling and no blocked signals in the child, as
        // from a shell (this process ignores SIGPIPE, for one).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        // A working directory through the shell (glibc's addchdir_np is not
        // visible to Swift).
        let words = cwd.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0, executable] } ?? [executable]
        let argv = (words + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, words[0], &actions, &attributes, argv, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw CommandError(command: command, output: "cannot start: \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        output = fds[0]
    }

    /// The exit status once it has exited (reaped now), else nil.
    func exitStatus() -> Int32? {
        var raw: Int32 = 0
        let r = waitpid(pid, &raw, WNOHANG)
        if r == pid { return Self.decode(raw) }
        return r < 0 && errno != EINTR ? -1 : nil
    }

    @discardableResult
    func waitForExit() -> Int32 {
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 { if errno != EINTR { return -1 } }
        return Self.decode(raw)
    }

    /// Exit code, or the signal's number + 128 as a shell shows it.
    private static func decode(_ raw: Int32) -> Int32 {
        raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }
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
