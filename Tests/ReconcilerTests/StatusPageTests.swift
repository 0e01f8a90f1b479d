#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import Reconciler
import Testing
import TestSupport

/// Issue 21, item 4: the status page at `/` of the metrics address.
@Suite(.serialized, .timeLimit(.minutes(6))) struct StatusPageTests {
    let usbredir = builtProduct("usbredir")

    static func header(_ answer: String, _ name: String) -> String? {
        let head = answer.components(separatedBy: "\r\n\r\n").first ?? ""
        return head.split(separator: "\r\n").first { $0.lowercased().hasPrefix(name.lowercased() + ": ") }
            .map { String($0.dropFirst(name.count + 2)) }
    }

    /// Without a browser: the page is a plain table (no script needed to
    /// see the figures), under a strict CSP, loading only its own assets.
    @Test func thePageIsAPlainTableUnderAStrictPolicyWithItsOwnAssetsOnly() async throws {
        let port = freeLoopbackPort()
        let apply = try ListenApply.start("usbredir-page", arguments: ["--metrics", "127.0.0.1:\(port)"])
        defer { apply.process.signal(SIGKILL) }
        var page = ""
        try await waitFor("the page to list the assignment", timeout: 20, interval: 0.05) {
            page = Metrics.request(port: port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
            return page.contains("<td data-field=\"name\">g</td>")
        }
        let csp = try #require(Self.header(page, "Content-Security-Policy"), "\(page)")
        #expect(csp.hasPrefix("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"), "\(csp)")
        #expect(csp.contains("frame-ancestors 'none'"))
        #expect(Self.header(page, "X-Content-Type-Options") == "nosniff")
        // No inline script or style, nothing from another origin.
        #expect(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"), "\(page)")
        #expect(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "\(page)")
        #expect(page.contains("<script src=\"/status.js\" defer></script>") && page.contains("href=\"/status.css\""))
        for field in ["device", "endpoint", "state", "since", "rate_in", "rate_out", "bytes_in", "bytes_out",
                      "transfers_in", "transfers_out", "last_error"] {
            #expect(page.contains("data-field=\"\(field)\""), "no \(field) cell")
        }
        #expect(page.contains("<td data-field=\"device\">virtual:source-sink</td>"), "\(page)")
        #expect(page.contains("<td data-field=\"bytes_in\" data-value=\"0\">0</td>"), "\(page)")

        let script = Metrics.request(port: port, "GET /status.js HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
        #expect(Self.header(script, "Content-Type") == "text/javascript; charset=utf-8" && script.contains("fetch(\"/status.json\""))
        #expect(!script.contains("innerHTML"), "the script must not build HTML from data")
        let style = Metrics.request(port: port, "GET /status.css HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
        #expect(Self.header(style, "Content-Type") == "text/css; charset=utf-8")

        let json = Metrics.request(port: port, "GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
        let body = String(json[(json.range(of: "\r\n\r\n")?.upperBound ?? json.startIndex)...])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "\(json)")
        let sessions = try #require(object["sessions"] as? [[String: Any]])
        #expect(sessions.count == 1 && sessions[0]["name"] as? String == "g", "\(sessions)")
        for key in ["state", "since", "bytes_in", "bytes_out", "transfers_in", "transfers_out", "last_error", "rate_in"] {
            #expect(sessions[0].keys.contains(key), "no \(key) in \(sessions[0])")
        }
        #expect(Metrics.request(port: port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")?
            .hasPrefix("HTTP/1.1 405") == true, "read-only")
    }

    /// Names and errors are text on the page, never markup.
    @Test func namesAndErrorsAreEscaped() throws {
        let status = AssignmentStatus(name: "<b>x</b>&\"", profile: "p", endpoint: "e", address: nil, channel: nil,
                                      device: nil, state: .error, since: "2026-12-07T19:00:00Z", bytesIn: 1234567,
                                      transfersIn: 1, bytesOut: 0, transfersOut: 0, lastError: "<script>", desiredDigest: "")
        let row = StatusPage.rowHTML(StatusPageModel.Row(status: status, rateIn: nil, rateOut: nil))
        #expect(row.contains("&lt;b&gt;x&lt;/b&gt;&amp;&quot;") && !row.contains("<b>"), "\(row)")
        #expect(row.contains("&lt;script&gt;") && !row.contains("<script>"), "\(row)")
        #expect(row.contains("<td data-field=\"bytes_in\" data-value=\"1234567\">1,234,567</td>"), "\(row)")
        #expect(row.contains("<td data-field=\"rate_in\">-</td>"), "\(row)")
    }

    // MARK: In a real browser, while a guest reads a stick

    static let chromium = Requirement.all(.tool("chromium", hint: "Debian package chromium"), .tool("python3"))

    /// The DOM of `url` in headless Chromium, `reads` times from the same
    /// page (no reload), `interval` seconds apart; with scripts on or off.
    /// scripts/chromium-dom.py drives Chromium over the DevTools protocol:
    /// `--dump-dom` reads the DOM by running script in the page, so it
    /// prints nothing with scripts off.
    static func dom(_ url: String, scripts: Bool = true, reads: Int = 1, interval: Double = 2,
                    screenshot: URL? = nil) throws -> [String] {
        var arguments = [Guest.repositoryRoot.path + "/scripts/chromium-dom.py", url, "--reads", "\(reads)",
                         "--interval", "\(interval)"]
        if !scripts { arguments.append("--no-scripts") }
        if let screenshot { arguments += ["--screenshot", screenshot.path] }
        let output = try runCommand(findExecutable("python3")!, arguments, timeout: 120)
        return output.components(separatedBy: "----- DOM -----\n").dropFirst().map { $0 }
    }

    /// The value of a numeric cell of the row of `name` in a dumped DOM.
    static func cell(_ dom: String, row name: String, _ field: String) -> Int? {
        guard let rowStart = dom.range(of: "<td data-field=\"name\">\(name)</td>") else { return nil }
        let rest = dom[rowStart.upperBound...]
        let rowText = rest[..<(rest.range(of: "</tr>")?.lowerBound ?? rest.endIndex)]
        guard let open = rowText.range(of: "data-field=\"\(field)\" data-value=\"") else { return nil }
        return Int(rowText[open.upperBound...].prefix { $0.isNumber })
    }

    @Test(.requires(.all(.qemu, chromium)))
    func chromiumSeesTheBytesGrowLiveAndWithoutScriptsAndTakesAScreenshot() async throws {
        let metered = try await MetricsTests.MeteredApply.start(usbredir)
        defer { metered.stop() }
        let port = metered.port

        let url = "http://127.0.0.1:\(port)/"
        // One page, read twice without reloading: the script redraws the
        // table from /status.json (it ran under the page's CSP), and the
        // guest's reading shows as more bytes.
        let shot = Guest.repositoryRoot.appendingPathComponent("out/status-page.png")
        try FileManager.default.createDirectory(at: shot.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: shot)
        let live = try Self.dom(url, reads: 2, interval: 3, screenshot: shot)
        try #require(live.count == 2, "two DOM reads expected: \(live)")
        for dom in live {
            #expect(dom.contains("data-live=\"yes\"") && dom.contains("Live: updated every second."),
                    "the script did not run:\n\(dom)")
            #expect(dom.contains("<td data-field=\"state\">connected</td>"), "\(dom)")
        }
        let before = try #require(Self.cell(live[0], row: "stick-c", "bytes_in"), "no bytes_in cell:\n\(live[0])")
        let after = try #require(Self.cell(live[1], row: "stick-c", "bytes_in"))
        #expect(after > before, "bytes_in stayed at \(before) in the live DOM")
        #expect((Self.cell(live[1], row: "stick-c", "rate_in") ?? 0) > 0, "no throughput shown:\n\(live[1])")
        print("PAGE bytes_in \(before) -> \(after) in Chromium's DOM, same page")

        // JavaScript off: the same table, rendered by the server; a reload
        // (another load) shows newer figures.
        let plain = try Self.dom(url, scripts: false)
        let plainAgain = try Self.dom(url, scripts: false)
        #expect(!(plain.first ?? "").contains("data-live"), "a script ran with scripts off")
        #expect((plain.first ?? "").contains("Reload the page for new figures."), "\(plain)")
        let reloaded = try #require(plainAgain.first.flatMap { Self.cell($0, row: "stick-c", "bytes_in") })
        #expect(reloaded > (plain.first.flatMap { Self.cell($0, row: "stick-c", "bytes_in") } ?? .max), "\(plainAgain)")
        #expect(reloaded >= after)

        // The screenshot of the live page (README's docs/status-page.png is one).
        let png = try Data(contentsOf: shot)
        #expect(png.count > 5000 && png.prefix(4) == Data([0x89, 0x50, 0x4e, 0x47]), "not a PNG: \(png.count) bytes")
    }
}
