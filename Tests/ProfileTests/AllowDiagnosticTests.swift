import Testing
@testable import Profile

/// `allow:` of listen endpoints (issue 10, finding 6).
@Suite struct AllowDiagnosticTests {
    @Test func allowIsReadAsPeerAddresses() throws {
        let scratch = try Scratch(files: [:])
        let result = try scratch.load("""
            version: 1
            endpoints:
              rig: {listen: 0.0.0.0:4001, allow: [192.0.2.10, "::1"]}
            devices:
              - {name: g, to: rig, virtual: {kind: source-sink}}
            """)
        #expect(result.diagnostics.isEmpty, "\(result.diagnostics)")
        #expect(result.profile?.endpoints["rig"]?.allowedPeers == ["192.0.2.10", "::1"])
    }

    @Test func aNonLoopbackListenWithoutAllowIsAWarning() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              rig: {listen: 0.0.0.0:4001}
              local: {listen: 127.0.0.1:4002}
            """) == ["p.yaml:3:17: warning: listen on 0.0.0.0 accepts any peer that can reach it; add allow: [ADDRESS, ...] or listen on 127.0.0.1"])
    }

    @Test func allowIsForListenOnlyAndTakesAddresses() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm: {spice: 127.0.0.1:5930, allow: [127.0.0.1]}
              rig: {listen: 127.0.0.1:4001, allow: [lab-host]}
            """) == ["p.yaml:3:31: error: allow applies to listen endpoints only",
                     "p.yaml:4:41: error: allow entries are IP addresses, found 'lab-host'; for example 192.0.2.10 or ::1"])
    }
}
