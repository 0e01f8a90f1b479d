#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import NIOHTTP1

/// What the metrics address answers: `/metrics` (Prometheus text), `/` (the
/// status page), `/status.json` (what the page polls), and the page's own
/// script and style sheet. Everything is read-only: GET and HEAD only.
struct HTTPRoutes: Sendable {
    let metrics: @Sendable () async -> [UInt8]
    let status: @Sendable () async -> StatusPageModel

    /// The page may load only what this server serves, run no inline code,
    /// and be framed by nobody: a strict policy costs nothing, as the page
    /// needs nothing else.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        + "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    static let pageHeaders: [(String, String)] = [
        ("Content-Security-Policy", contentSecurityPolicy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]

    func reply(to head: HTTPRequestHead) async -> HTTPReply {
        guard head.method == .GET || head.method == .HEAD else {
            return .text(.methodNotAllowed, "GET only\n", headers: [("Allow", "GET, HEAD")])
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch path {
        case "/metrics":
            return HTTPReply(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: await metrics())
        case "/":
            return HTTPReply(status: .ok, contentType: "text/html; charset=utf-8", headers: Self.pageHeaders,
                             body: Array(StatusPage.html(await status()).utf8))
        case "/status.json":
            return HTTPReply(status: .ok, contentType: "application/json", headers: Self.pageHeaders,
                             body: StatusPage.json(await status()))
        case "/status.js":
            return HTTPReply(status: .ok, contentType: "text/javascript; charset=utf-8", headers: Self.pageHeaders,
                             body: Array(StatusPage.script.utf8))
        case "/status.css":
            return HTTPReply(status: .ok, contentType: "text/css; charset=utf-8", headers: Self.pageHeaders,
                             body: Array(StatusPage.style.utf8))
        default:
            return .text(.notFound, "see / or /metrics\n")
        }
    }
}
