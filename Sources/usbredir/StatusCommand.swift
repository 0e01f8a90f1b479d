import ArgumentParser
import Foundation
import Reconciler

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the sessions of running applies.",
        discussion: "Asks every running apply over its unix socket (or only --socket) and merges the answers.")

    @Option(help: "Ask only the apply listening on this socket.")
    var socket: String?

    @Flag(help: "Print {\"sessions\": [...]} as JSON.")
    var json = false

    func run() async throws {
        let paths = socket.map { [$0] } ?? StatusSocket.all()
        var sessions: [AssignmentStatus] = []
        var conflicts: [MatchConflict] = []
        var answered = 0
        for path in paths {
            guard let report = await StatusClient.query(path) else { continue }
            answered += 1
            sessions += report.sessions
            conflicts += report.conflicts
        }
        if socket != nil && answered == 0 {
            FileHandle.standardError.write(Data("usbredir: no apply answers on \(socket!)\n".utf8))
            throw Exit.runtimeFailure
        }
        if json {
            let data = try JSONEncoder.sortedKeys.encode(StatusReport(sessions: sessions, conflicts: conflicts))
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if sessions.isEmpty {
            print("no running apply")
            return
        }
        let rows = sessions.map { s in
            [s.name, s.endpoint, s.channel.map(String.init) ?? "-", s.device ?? "-", s.state.rawValue,
             "\(s.bytesIn)/\(s.bytesOut)", s.lastError ?? ""]
        }
        printTable(["NAME", "ENDPOINT", "CHANNEL", "DEVICE", "STATE", "BYTES IN/OUT", "LAST ERROR"], rows)
        for c in conflicts { print(c.text) }
    }
}

/// Prints aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { i, c in i == row.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        print(cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    }
}
