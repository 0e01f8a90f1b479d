import Foundation
import Testing
import TestSupport
@testable import Libvirt

/// libvirt is opened at run time (LibvirtLibrary), not linked.
@Suite struct LibvirtLibraryTests {
    @Test func aMissingLibraryIsOneClearError() throws {
        let result = LibvirtLibrary.open(name: "/nonexistent/libvirt.so.0")
        guard case .failure(let error) = result else {
            Issue.record("a library that does not exist loaded")
            return
        }
        #expect(error.description.hasPrefix("install libvirt0 to use libvirt endpoints (cannot load /nonexistent/libvirt.so.0"),
                "\(error)")
    }

    /// A library that lacks our functions (libc here) is refused at the
    /// load, naming the first missing symbol, not at the first call.
    @Test func aLibraryWithoutTheFunctionsIsRefusedAtTheLoad() throws {
        guard case .failure(let error) = LibvirtLibrary.open(name: "libc.so.6") else {
            Issue.record("libc was taken for libvirt")
            return
        }
        #expect(error.description.contains("no symbol virSetErrorFunc"), "\(error)")
    }

    // Debian's real libvirt0 is loaded by the built binary, not in this
    // test process (LibvirtOptionalTests.withLibvirtTheProfileDoesNotAskForIt):
    // libvirt's thread-local state on a test worker thread made libdispatch
    // crash when that thread exited, later in the run.

    @Test func theOverrideNamesTheLibrary() {
        #expect(LibvirtLibrary.libraryName([:]) == "libvirt.so.0")
        #expect(LibvirtLibrary.libraryName(["USBREDIR_LIBVIRT_SO": ""]) == "libvirt.so.0")
        #expect(LibvirtLibrary.libraryName(["USBREDIR_LIBVIRT_SO": "/x/libvirt.so"]) == "/x/libvirt.so")
    }
}
