import Foundation
import Testing
@testable import Profile

/// An image is locked while in use (one writer or any number of readers), so
/// validate reports an image that two assignments would open when either
/// of them may write it.
@Suite struct ImageAssignmentTests {
    // The same image read-write twice: both sessions would write one file.

    @Test func sameImageReadWriteTwiceIsAnErrorAtTheSecondImage() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual:
                  kind: mass-storage
                  image: stick.img
              - name: b
                to: vm1
                virtual:
                  kind: mass-storage
                  image: ./stick.img
            """, files: ["stick.img": ""])
            == ["p.yaml:17:14: error: image ./stick.img is already assigned read-write to 'a'"
                + "; an image can be written by one assignment only (make both read-only, or use a copy)"])
    }

    @Test func sameImageReadOnlyAfterReadWriteIsAnError() throws {
        let d = try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: stick.img}
              - name: b
                to: vm1
                virtual: {kind: mass-storage, image: stick.img, read-only: true}
            """, files: ["stick.img": ""])
        #expect(d.count == 1 && d[0].hasPrefix("p.yaml:13:42: error: image stick.img is already assigned read-write to 'a'"),
                "\(d)")
    }

    @Test func sameImageReadOnlyTwiceIsFine() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: stick.img, read-only: true}
              - name: b
                to: vm1
                virtual: {kind: mass-storage, image: stick.img, read-only: true}
            """, files: ["stick.img": ""]).isEmpty)
    }

    @Test func sameImageInAHostSectionIsFound() throws {
        let d = try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: stick.img}
            hosts:
              testhost:
                devices:
                  - name: b
                    to: vm1
                    virtual: {kind: mass-storage, image: stick.img}
            """, files: ["stick.img": ""])
        #expect(d.count == 1 && d[0].hasPrefix("p.yaml:16:46: error: image stick.img is already assigned read-write to 'a'"),
                "\(d)")
    }
}
