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

    /// Debian's libvirt0 (installed with the libvirt test daemon) loads and
    /// has every function we call.
    @Test(.requires(.libvirt0)) func debiansLibvirt0Loads() throws {
        guard case .success(let library) = LibvirtLibrary.open(name: LibvirtLibrary.soname) else {
            Issue.record("libvirt.so.0 did not load")
            return
        }
        // No connection yet: libvirt has no error to report.
        #expect(library.getLastErrorCode() == 0)
    }

    @Test func theOverrideNamesTheLibrary() {
        #expect(LibvirtLibrary.libraryName([:]) == "libvirt.so.0")
        #expect(LibvirtLibrary.libraryName(["USBREDIR_LIBVIRT_SO": ""]) == "libvirt.so.0")
        #expect(LibvirtLibrary.libraryName(["USBREDIR_LIBVIRT_SO": "/x/libvirt.so"]) == "/x/libvirt.so")
    }
}
