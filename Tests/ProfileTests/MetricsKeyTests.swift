import Common
import Testing
@testable import Profile

/// `metrics:` at the top of a profile: where apply serves /metrics.
@Suite struct MetricsKeyTests {
    @Test func loopbackAddressIsKept() throws {
        let scratch = try Scratch()
        let result = try scratch.load("version: 1\nmetrics: 127.0.0.1:9477\n")
        #expect(result.diagnostics.isEmpty)
        #expect(result.profile?.metrics == HostPort(host: "127.0.0.1", port: 9477))
    }

    @Test func absentMeansOff() throws {
        let result = try Scratch().load("version: 1\n")
        #expect(try #require(result.profile).metrics == nil)
    }

    @Test func malformedAddressPointsAtTheValue() throws {
        #expect(try diagnostics("version: 1\nmetrics: 9477\n")
            == ["p.yaml:2:10: error: metrics must be host:port, found '9477'; for example 127.0.0.1:9477"])
    }

    @Test func portOutOfRange() throws {
        #expect(try diagnostics("version: 1\nmetrics: 127.0.0.1:70000\n")
            == ["p.yaml:2:10: error: port 70000 is out of range 1...65535"])
    }

    @Test func everyInterfaceIsAWarning() throws {
        let scratch = try Scratch()
        let result = try scratch.load("version: 1\nmetrics: 0.0.0.0:9477\n")
        #expect(scratch.descriptions(result) == [
            "p.yaml:2:10: warning: metrics on 0.0.0.0 can be scraped by anyone who reaches it; "
                + "serve it on 127.0.0.1 and let a local agent or a firewall rule reach it",
        ])
        #expect(result.profile?.metrics?.port == 9477)
    }

    @Test func commandLineAddress() throws {
        #expect(try HostPort.commandLine("[::1]:9477").get() == HostPort(host: "::1", port: 9477))
        #expect(throws: HostPortSyntaxError.self) { try HostPort.commandLine("localhost").get() }
    }
}
