#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reconciler
import Testing
import TestSupport

/// `metrics:` / `--metrics`: Prometheus text exposition from a running
/// apply, read from the sessions' own counters.
@Suite(.serialized, .timeLimit(.minutes(5))) struct MetricsTests {
    let usbredir = builtProduct("usbredir")

    /// An apply with /metrics (and the status page) on `port`, serving
    /// stick-c to vm2, whose guest has read it once and reads on.
    struct MeteredApply {
        let lab: ApplyEndToEndTests.Lab
        let port: Int
        let vm: QEMUVM
        let apply: BackgroundProcess

        static func start(_ usbredir: String) async throws -> MeteredApply {
            let lab = try ApplyEndToEndTests.makeLab()
            let port = freeLoopbackPort()
            let profile = ApplyEndToEndTests.profile(lab, sticks: [("stick-c", "c.img", "vm2")])
            try ApplyEndToEndTests.write("metrics: 127.0.0.1:\(port)\n" + profile, to: lab.profile)
            let vm = try ApplyEndToEndTests.watchVM(port: lab.vm2Port, channels: 1)
            let apply = try BackgroundProcess(usbredir, ["apply", "--socket", lab.socket, lab.profile.path],
                                              logFile: lab.dir.appendingPathComponent("apply.log"))
            let metered = MeteredApply(lab: lab, port: port, vm: vm, apply: apply)
            #expect(await vm.serialContains("size=10485760", within: 60), "apply:\n\(apply.log)")
            #expect(await vm.serialContains("read-pass", within: 30), "guest:\n\(GuestReport(serial: vm.serial))")
            return metered
        }

        func stop() {
            vm.stop()
            apply.signal(SIGKILL)
        }
    }

    @Test(.requires(.qemu)) func aScrapeDuringAGuestReadSeesTheByteCountersGrow() async throws {
        let metered = try await MeteredApply.start(usbredir)
        defer { metered.stop() }
        let (lab, port, apply) = (metered.lab, metered.port, metered.apply)

        let labels = ["assignment=\"stick-c\"", "endpoint=\"vm2\""]
        let page = try #require(Metrics.scrape(port: port), "no answer on /metrics:\n\(apply.log)")
        let first = try #require(Metrics.value(page, "usbredir_bytes_total", labels + ["direction=\"in\""]), "\(page)")
        // The guest reads in a loop: the next scrapes see more bytes.
        let grew = await waitUntil(timeout: 20, interval: 0.2) {
            (Metrics.scrape(port: port).flatMap { Metrics.value($0, "usbredir_bytes_total", labels + ["direction=\"in\""]) } ?? 0) > first
        }
        #expect(grew != nil, "usbredir_bytes_total{direction=\"in\"} stayed at \(first)")
        let later = try #require(Metrics.scrape(port: port))
        #expect(Metrics.value(later, "usbredir_transfers_total", labels + ["direction=\"in\""]) ?? 0 > 0)
        #expect(Metrics.value(later, "usbredir_session_state", labels + ["state=\"connected\""]) == 1, "\(later)")
        #expect(Metrics.value(later, "usbredir_session_state", labels + ["state=\"backoff\""]) == 0)
        #expect(Metrics.value(later, "usbredir_reconnects_total", labels) == 0)
        #expect(Metrics.value(later, "usbredir_transfers_in_flight", labels) != nil)
        #expect(Metrics.value(later, "process_resident_memory_bytes", []) ?? 0 > 1_000_000)
        #expect(Metrics.value(later, "process_open_fds", []) ?? 0 > 3)
        // The same truth as status: its counter is at least what was scraped before it.
        let scraped = try #require(Metrics.value(later, "usbredir_bytes_total", labels + ["direction=\"in\""]))
        let status = try #require(try ApplyEndToEndTests.status(lab).first { $0.name == "stick-c" })
        #expect(Double(status.bytesIn) >= scraped, "status \(status.bytesIn) < metrics \(scraped)")
        print("METRICS bytes_in \(first) -> \(scraped) between scrapes; page \(later.utf8.count) bytes")
    }

    @Test func theCommandLineAddressServesMetricsAndThePageAndDropsIdleScrapers() async throws {
        let port = freeLoopbackPort()
        let apply = try ListenApply.start("usbredir-metrics", arguments: ["--metrics", "127.0.0.1:\(port)"])
        defer { apply.process.signal(SIGKILL) }
        let page = try await waitForPage(port: port, apply.process)
        #expect(page.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(page)")
        #expect(page.contains("Content-Type: text/plain; version=0.0.4"))
        let states = page.split(separator: "\n").filter { $0.hasPrefix("usbredir_session_state{") }
        #expect(states.count == AssignmentState.allCases.count && states.filter { $0.hasSuffix(" 1.0") }.count == 1,
                "\(states)")
        #expect(Metrics.request(port: port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")?.hasPrefix("HTTP/1.1 404") == true)
        let html = Metrics.request(port: port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
        #expect(html.hasPrefix("HTTP/1.1 200 OK\r\n") && html.contains("Content-Type: text/html"), "\(html)")
        #expect(Metrics.request(port: port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")?
            .hasPrefix("HTTP/1.1 405") == true)
        // A scraper that connects and sends nothing is closed, not kept.
        let start = Date()
        #expect(Metrics.request(port: port, "") == "")
        let held = Date().timeIntervalSince(start)
        #expect(held < 4, "an idle connection was held \(held) s (head deadline 2 s)")
    }

    @Test func aTakenAddressStopsApplyAndNamesIt() async throws {
        let port = freeLoopbackPort()
        let holder = try Metrics.listen(port: port)
        defer { close(holder) }
        let apply = try ListenApply.start("usbredir-metrics-taken", arguments: ["--metrics", "127.0.0.1:\(port)"])
        defer { apply.process.signal(SIGKILL) }
        let exit = await apply.process.waitForExit(timeout: 20)
        #expect(exit == 1, "apply:\n\(apply.process.log)")
        #expect(apply.process.log.contains("cannot serve metrics on 127.0.0.1:\(port)"), "\(apply.process.log)")
    }

    @Test func aMalformedAddressIsAUsageError() throws {
        let (status, output) = try runCommandStatus(usbredir, ["apply", "--metrics", "9477", "/nonexistent.yaml"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("expected HOST:PORT such as 127.0.0.1:9477"), "\(output)")
    }

    /// The first page that shows the sessions: /metrics answers from the
    /// start, the sessions appear with the first reconcile pass.
    func waitForPage(port: Int, _ apply: BackgroundProcess) async throws -> String {
        var page: String?
        try await waitFor("apply to serve its sessions on /metrics on \(port)", timeout: 20, interval: 0.05) {
            page = Metrics.request(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            return page?.contains("usbredir_session_state{") == true
        }
        return page ?? ""
    }
}

/// A plain-socket HTTP client and a reader of the exposition format.
enum Metrics {
    /// The body of GET /metrics, or nil when nothing answers 200.
    static func scrape(port: Int) -> String? {
        guard let answer = request(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
              answer.hasPrefix("HTTP/1.1 200"), let split = answer.range(of: "\r\n\r\n") else { return nil }
        return String(answer[split.upperBound...])
    }

    /// Sends `text` and reads until the server closes (10 s at most); nil
    /// when the connection fails.
    static func request(port: Int, _ text: String) -> String? {
        guard let fd = try? connectLoopback(port: port) else { return nil }
        defer { close(fd) }
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { return nil }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// The value of the first sample of `name` whose labels include every one of `labels`.
    static func value(_ page: String, _ name: String, _ labels: [String]) -> Double? {
        for line in page.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard labels.allSatisfy({ line.contains($0) }), let number = line.split(separator: " ").last else { continue }
            return Double(number)
        }
        return nil
    }

    /// A listening socket on 127.0.0.1:port, to take the address.
    static func listen(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1) == 0 else { close(fd); throw POSIXError(.EADDRINUSE) }
        return fd
    }
}
