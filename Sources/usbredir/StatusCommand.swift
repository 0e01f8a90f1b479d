import Dispatch
import ArgumentParser
import Common
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
import Reconciler
#if canImport(Glibc)
import Glibc
#endif

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the sessions of running applies.",
        discussion: """
            Asks every running apply over its unix socket (or only --socket) and merges the answers. \
            With --watch it polls every --interval seconds and shows each session's throughput \
            each way since the previous poll: redrawn in place on a terminal, appended lines \
            otherwise; SIGINT or SIGTERM ends it with status 0.
            """)

    @Option(help: "Ask only the apply listening on this socket.")
    var socket: String?

    @Flag(help: "Print {\"sessions\": [...]} as JSON.")
    var json = false

    @Flag(help: "Keep polling: state, throughput each way and last error per session, until SIGINT or SIGTERM.")
    var watch = false

    @Option(help: "Seconds between polls with --watch.")
    var interval: Double = 1

    func validate() throws {
        if watch && json { throw ValidationError("--watch and --json cannot be combined") }
        if !watch && interval != 1 { throw ValidationError("--interval needs --watch") }
        guard interval >= 0.1 && interval <= 3600 else { throw ValidationError("--interval must be between 0.1 and 3600 seconds") }
    }

    func run() async throws {
        if watch { return await watchLoop() }
        let paths = socket.map { [$0] } ?? StatusSocket.all()
        var sessions: [AssignmentStatus] = []
        var conflicts: [MatchConflict] = []
        var held: [HostHeldDevice] = []
        var answered = 0
        for path in paths {
            guard let report = await StatusClient.query(path) else { continue }
            answered += 1
            sessions += report.sessions
            conflicts += report.conflicts
            held += report.heldByHost
        }
        if socket != nil && answered == 0 {
            StandardStream.error("usbredir: no apply answers on \(socket!)\n")
            throw Exit.runtimeFailure
        }
        if json {
            let data = try JSONEncoder.sortedKeys.encode(StatusReport(sessions: sessions, conflicts: conflicts, heldByHost: held))
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if sessions.isEmpty {
            print("no running apply")
            return
        }
        let rows = sessions.map { s in
            [s.name, s.endpoint + (s.address.map { " (\($0))" } ?? ""), s.channel.map(String.init) ?? "-", s.device ?? "-", s.state.rawValue,
             "\(s.bytesIn)/\(s.bytesOut)", s.lastError ?? ""]
        }
        printTable(["NAME", "ENDPOINT", "CHANNEL", "DEVICE", "STATE", "BYTES IN/OUT", "LAST ERROR"], rows)
        for c in conflicts { print(c.text) }
        for h in held { print(h.text) }
    }
}

extension StatusCommand {
    /// One merged poll of every apply (or of --socket).
    func poll() async -> [AssignmentStatus] {
        var sessions: [AssignmentStatus] = []
        for path in socket.map({ [$0] }) ?? StatusSocket.all() {
            if let report = await StatusClient.query(path) { sessions += report.sessions }
        }
        return sessions
    }

    /// `--watch`: polls until SIGINT/SIGTERM, which end it with status 0
    /// (output is flushed after every poll, so nothing is lost).
    func watchLoop() async {
        for number in [SIGINT, SIGTERM] {
            signal(number) { _ in _exit(0) }
        }
        let terminal = isatty(STDOUT_FILENO) == 1
        var meter = ThroughputMeter()
        let header = ["NAME", "STATE", "IN/S", "OUT/S", "DEVICE", "LAST ERROR"]
        var printedHeader = false
        while true {
            let sessions = await poll()
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            let rates = meter.update(sessions, at: now)
            let rows = zip(sessions, rates).map { s, r in
                [s.name, s.state.rawValue, ThroughputMeter.format(r?.bytesInPerSecond),
                 ThroughputMeter.format(r?.bytesOutPerSecond), s.device ?? "-", s.lastError ?? ""]
            }
            let stamp = RFC3339.string()
            if terminal {
                // Cursor home and clear: the table is redrawn in place.
                print("\u{1B}[H\u{1B}[2J", terminator: "")
                print("usbredir status --watch  every \(interval) s  \(stamp)\n")
                if sessions.isEmpty { print("no running apply") } else { printTable(header, rows) }
            } else {
                // A pipe or file: plain lines, appended; every line carries its time.
                if !printedHeader { printTable(["TIME"] + header, []); printedHeader = true }
                if sessions.isEmpty { print("\(stamp)  no running apply") }
                for row in rows { print(([stamp] + row).joined(separator: "  ").trimmingCharacters(in: .whitespaces)) }
            }
            fflush(nil)   // every stream: a pipe sees each poll at once
            try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
        }
    }
}


/// Prints aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { i, c in i == row.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }
        print(cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    }
}
