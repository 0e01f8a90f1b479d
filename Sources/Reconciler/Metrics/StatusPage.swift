import Common
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// What the status page shows: every assignment as `status` reports it,
/// with its throughput each way.
struct StatusPageModel: Sendable, Encodable {
    struct Row: Sendable, Encodable {
        var status: AssignmentStatus
        /// Bytes per second since the previous sample; nil on the first.
        var rateIn: Double?
        var rateOut: Double?

        enum CodingKeys: String, CodingKey { case status, rateIn = "rate_in", rateOut = "rate_out" }

        func encode(to encoder: any Encoder) throws {
            // The status fields flat, as `status --json` has them, plus the rates.
            try status.encode(to: encoder)
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(rateIn, forKey: .rateIn)
            try c.encode(rateOut, forKey: .rateOut)
        }
    }

    var generated: String
    var profilePath: String?
    var sessions: [Row]

    enum CodingKeys: String, CodingKey { case generated, profilePath = "profile_path", sessions }
}

/// Samples the sessions for the page. Rates are counter growth over at
/// least `minimumInterval`: several browsers polling at once share one
/// sample instead of each seeing a rate over a few milliseconds.
actor StatusPageSource {
    private let report: @Sendable () async -> StatusReport
    private var meter = ThroughputMeter()
    private var lastSample = -Double.infinity
    private var rates: [String: ThroughputMeter.Rate] = [:]
    static let minimumInterval = 1.0

    init(report: @escaping @Sendable () async -> StatusReport) { self.report = report }

    func model() async -> StatusPageModel {
        let now = await report()
        let time = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        if time - lastSample >= Self.minimumInterval {
            let fresh = meter.update(now.sessions, at: time)
            rates = [:]
            for (session, rate) in zip(now.sessions, fresh) { rates[Self.key(session)] = rate }
            lastSample = time
        }
        let rows = now.sessions.map { s in
            StatusPageModel.Row(status: s, rateIn: rates[Self.key(s)]?.bytesInPerSecond,
                                rateOut: rates[Self.key(s)]?.bytesOutPerSecond)
        }
        return StatusPageModel(generated: RFC3339.string(Date()), profilePath: now.profilePath, sessions: rows)
    }

    private static func key(_ s: AssignmentStatus) -> String { "\(s.profile)\u{0}\(s.name)" }
}

/// The page itself: a plain table rendered on the server (it works with
/// JavaScript off: reload for new figures), which /status.js, when it runs,
/// refreshes every second from /status.json. No external assets, no
/// inline script or style (the Content-Security-Policy forbids both).
enum StatusPage {
    static let columns = ["Assignment", "Device", "Endpoint", "State", "Since", "In/s", "Out/s",
                          "Bytes in", "Bytes out", "Transfers in", "Transfers out", "Last error"]

    static func html(_ model: StatusPageModel) -> String {
        let title = "usbredir" + (model.profilePath.map { ": " + escape(String($0.split(separator: "/").last ?? Substring($0))) } ?? "")
        var out = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(title)</title>
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <link rel="stylesheet" href="/status.css"><script src="/status.js" defer></script></head>
            <body><header><h1>\(title)</h1>
            <p>As of <time id="generated">\(escape(model.generated))</time>.
            <span id="live">Reload the page for new figures.</span></p></header>
            <table id="sessions"><thead><tr>
            """
        out += columns.map { "<th>\($0)</th>" }.joined()
        out += "</tr></thead><tbody>\n"
        for row in model.sessions { out += rowHTML(row) + "\n" }
        if model.sessions.isEmpty { out += "<tr><td colspan=\"\(columns.count)\">No assignments.</td></tr>\n" }
        out += "</tbody></table>\n<p class=\"note\">In: device to VM (USB IN); Out: VM to device. "
            + "Machine-readable: <a href=\"/status.json\">/status.json</a>, <a href=\"/metrics\">/metrics</a>.</p>\n"
            + "</body></html>\n"
        return out
    }

    /// One row; each cell carries its field name (and numbers their raw
    /// value) so the script and tests can read it.
    static func rowHTML(_ row: StatusPageModel.Row) -> String {
        let s = row.status
        let endpoint = s.endpoint + (s.address.map { " (\($0))" } ?? "")
        let cells: [(String, String, String?)] = [
            ("name", s.name, nil),
            ("device", s.device ?? "none", nil),
            ("endpoint", endpoint, nil),
            ("state", s.state.rawValue, nil),
            ("since", s.since, nil),
            ("rate_in", ThroughputMeter.format(row.rateIn), row.rateIn.map { String(Int($0)) }),
            ("rate_out", ThroughputMeter.format(row.rateOut), row.rateOut.map { String(Int($0)) }),
            ("bytes_in", grouped(s.bytesIn), String(s.bytesIn)),
            ("bytes_out", grouped(s.bytesOut), String(s.bytesOut)),
            ("transfers_in", grouped(s.transfersIn), String(s.transfersIn)),
            ("transfers_out", grouped(s.transfersOut), String(s.transfersOut)),
            ("last_error", s.lastError ?? "", nil),
        ]
        let tds = cells.map { field, text, value in
            "<td data-field=\"\(field)\"" + (value.map { " data-value=\"\($0)\"" } ?? "") + ">\(escape(text))</td>"
        }
        return "<tr class=\"state-\(escape(s.state.rawValue))\">" + tds.joined() + "</tr>"
    }

    static func json(_ model: StatusPageModel) -> [UInt8] {
        Array((try? JSONEncoder.sortedKeys.encode(model)) ?? Data("{}".utf8))
    }

    /// 1234567 -> "1,234,567".
    static func grouped(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// Text into HTML (element content and quoted attributes alike).
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
