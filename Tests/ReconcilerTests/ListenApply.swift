#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport

/// `usbredir apply` of a one-assignment profile: a source-sink device on a
/// `listen:` endpoint, which a test connects to as the VM would.
struct ListenApply {
    let process: BackgroundProcess
    let profile: URL
    let socket: String
    let port: Int

    /// `endpoint`: extra keys of the endpoint (e.g. `allow: [...]`);
    /// `socketName`: the status socket, relative to the test's folder.
    /// `arguments`: more options of apply (e.g. `--metrics ADDRESS`).
    static func start(_ prefix: String, endpoint extra: String = "", socketName: String = "s.sock",
                      arguments: [String] = []) throws -> ListenApply {
        let dir = try makeTemporaryDirectory(prefix)
        let port = freeLoopbackPort()
        let profile = dir.appendingPathComponent("lab.yaml")
        let keys = extra.isEmpty ? "" : ", \(extra)"
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(port)\(keys)}\ndevices:\n  - {name: g, to: e, virtual: {kind: source-sink}}\n"
            .write(to: profile, atomically: true, encoding: .utf8)
        let socket = dir.appendingPathComponent(socketName).path
        let process = try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", socket] + arguments + [profile.path],
                                            logFile: dir.appendingPathComponent("apply.log"))
        return ListenApply(process: process, profile: profile, socket: socket, port: port)
    }

    /// A connection to the endpoint, once apply listens.
    func connectAsVM() async throws -> Int32 {
        var fd: Int32 = -1
        try await waitFor("apply to listen on \(port)", timeout: 20) {
            fd = (try? connectLoopback(port: port)) ?? -1
            return fd >= 0
        }
        return fd
    }
}
