import Foundation
import Testing
@testable import Profile

/// Inputs a profile author (or a broken generator) can write that must give
/// diagnostics, never a crash.
@Suite struct YAMLNestingTests {
    @Test func deeplyNestedFlowSequencesGiveADiagnostic() throws {
        // Before the fix: no limit; the nested tree is built, then torn down
        // and decoded recursively.
        let depth = 10_000
        let yaml = "version: 1\nendpoints: " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "\n"
        let d = try diagnostics(yaml)
        #expect(d.contains { $0.hasPrefix("p.yaml:2:") && $0.contains("nested more than") }, "\(d.prefix(3))")
    }

    @Test func deeplyNestedBlockMappingsGiveADiagnostic() throws {
        var yaml = "version: 1\n"
        for level in 0..<2_000 { yaml += String(repeating: " ", count: level) + "k:\n" }
        let d = try diagnostics(yaml)
        #expect(d.contains { $0.contains("nested more than") }, "\(d.prefix(3))")
    }

    @Test func deeplyNestedFlowMappingsGiveADiagnostic() throws {
        let depth = 10_000
        let yaml = String(repeating: "{a: ", count: depth) + "1" + String(repeating: "}", count: depth) + "\n"
        let d = try diagnostics(yaml)
        #expect(d.contains { $0.hasPrefix("p.yaml:1:") && $0.contains("nested more than") }, "\(d.prefix(3))")
    }

    @Test func ordinaryNestingIsFine() throws {
        let d = try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendor: [0x1, [0x2]]}
            """)
        #expect(!d.contains { $0.contains("nested more than") })
    }
}
