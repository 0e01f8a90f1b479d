import Foundation
import Testing
import TestSupport

/// Issue 21: `make deb`. The test packages the *debug* binary
/// (scripts/make-deb.sh BINARY OUTDIR, what `make deb BINARY=` runs), not a
/// release build: the static release build takes 6+ minutes on CI's two
/// cores and the suite must stay well under 30; every check here is about
/// the package's structure (files, control fields, maintainer scripts, the
/// unit, man pages, lintian), which the binary's optimisation does not
/// change. What does differ for a debug binary (its RUNPATH to the Swift
/// toolchain, the Swift runtime libraries that no Debian package provides)
/// is named below where it matters. `make deb` with the release binary is
/// the same script.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DebianPackageTests {
    static let tools: Requirement = .all(.tool("dpkg-deb"), .tool("dpkg-shlibdeps", hint: "Debian package dpkg-dev"),
                                         .tool("lintian"), .tool("mandoc"), .tool("systemd-analyze"), .tool("make"),
                                         .tool("strip", hint: "Debian package binutils"))

    /// Built once for the suite's tests (a few seconds).
    static let built: Result<(deb: URL, lintian: String), Error> = Result {
        let out = try makeTemporaryDirectory("usbredir-deb")
        try runCommand("/bin/bash", [Guest.repositoryRoot.path + "/scripts/make-deb.sh", builtProduct("usbredir"), out.path],
                       cwd: Guest.repositoryRoot.path, timeout: 240)
        let debs = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix("_amd64.deb") }
        guard debs.count == 1 else { throw PackageNotBuilt(found: debs) }
        let lintian = try String(contentsOf: out.appendingPathComponent("lintian.txt"), encoding: .utf8)
        return (out.appendingPathComponent(debs[0]), lintian)
    }

    var deb: URL { get throws { try Self.built.get().deb } }

    static let expectedFiles = [
        "./usr/bin/usbredir",
        "./usr/share/man/man1/usbredir.1.gz",
        "./usr/share/man/man5/usbredir-profile.5.gz",
        "./usr/share/bash-completion/completions/usbredir",
        "./usr/share/zsh/vendor-completions/_usbredir",
        "./usr/share/fish/vendor_completions.d/usbredir.fish",
        "./lib/systemd/system/usbredir@.service",
        "./lib/udev/rules.d/70-usbredir.rules",
        "./usr/share/doc/usbredir/copyright",
        "./usr/share/doc/usbredir/changelog.gz",
        "./usr/share/doc/usbredir/examples/lab.yaml",
        "./usr/share/doc/usbredir/examples/fleet.yaml",
        "./usr/share/doc/usbredir/examples/images/stick.img",
        "./usr/share/lintian/overrides/usbredir",
        "./etc/usbredir/",
    ]

    @Test(.requires(tools)) func theFileNameIsVersionAndArchitecture() throws {
        #expect(try deb.lastPathComponent == "usbredir_0.1.0_amd64.deb")
    }

    @Test(.requires(tools)) func everyFileIsInPlaceWithItsMode() throws {
        let listing = try runCommand("/usr/bin/dpkg-deb", ["-c", deb.path])
        let paths = Set(listing.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) })
        for file in Self.expectedFiles { #expect(paths.contains(file), "\(file) missing:\n\(listing)") }
        #expect(listing.contains("-rwxr-xr-x root/root") && listing.contains("./usr/bin/usbredir"), "\(listing)")
        // Nothing from the build tree or the Makefile's scratch files.
        #expect(!listing.contains(".tmp") && !listing.contains(".build"), "\(listing)")
    }

    /// Depends comes from dpkg-shlibdeps; libvirt is only recommended (it is
    /// loaded at run time for libvirt endpoints).
    @Test(.requires(tools)) func dependsIsComputedAndLibvirtIsOnlyRecommended() throws {
        let control = try runCommand("/usr/bin/dpkg-deb", ["-f", deb.path])
        let depends = control.split(separator: "\n").first { $0.hasPrefix("Depends: ") }.map(String.init) ?? ""
        for package in ["libc6 (>= ", "libusb-1.0-0 (>= ", "liblz4-1 (>= ", "libyaml-0-2"] {
            #expect(depends.contains(package), "\(package) not in \(depends)")
        }
        #expect(!depends.contains("libvirt"), "\(depends)")
        #expect(control.contains("\nRecommends: libvirt0\n"), "\(control)")
        #expect(control.contains("Package: usbredir\n") && control.contains("Architecture: amd64\n"), "\(control)")
    }

    /// Unpacked: the binary runs and names its commit, the man pages render,
    /// the unit passes `systemd-analyze verify`.
    @Test(.requires(tools)) func unpackedTheBinaryRunsTheManPagesRenderAndTheUnitVerifies() throws {
        let root = try makeTemporaryDirectory("usbredir-deb-x")
        try runCommand("/usr/bin/dpkg-deb", ["-x", deb.path, root.path])
        let binary = root.appendingPathComponent("usr/bin/usbredir").path
        let version = try runCommand(binary, ["--version"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let head = try runCommand("/usr/bin/git", ["-C", Guest.repositoryRoot.path, "rev-parse", "--short=12", "HEAD"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.hasPrefix("0.1.0 (commit \(head)"), "\(version)")
        let file = try runCommand("/usr/bin/file", [binary])
        #expect(file.contains("stripped") && !file.contains("not stripped"), "\(file)")

        for (page, name) in [("usr/share/man/man1/usbredir.1.gz", "usbredir"),
                             ("usr/share/man/man5/usbredir-profile.5.gz", "usbredir-profile")] {
            // mandoc reads the gzipped page as man(1) would; its terminal
            // output marks bold as X<backspace>X, taken out here.
            let rendered = try runCommand(findExecutable("mandoc")!, ["-Tutf8", "-Wwarning", root.appendingPathComponent(page).path])
            let text = Self.plain(rendered)
            #expect(text.contains("NAME") && text.contains(name) && text.count > 2000, "\(page): \(text.prefix(300))")
        }

        // The packaged unit, verified by systemd (offline). It names
        // /usr/bin/usbredir, which is not installed on this machine: the
        // copy verified points at the unpacked binary instead, nothing else
        // changed. (`--root=` would look for sysinit.target and /bin/kill
        // in the unpacked tree too.)
        let units = root.appendingPathComponent("lib/systemd/system")
        let unit = try String(contentsOf: units.appendingPathComponent("usbredir@.service"), encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/usbredir apply /etc/usbredir/%i.yaml"), "\(unit)")
        let check = try makeTemporaryDirectory("usbredir-deb-unit")
        try unit.replacingOccurrences(of: "ExecStart=/usr/bin/usbredir", with: "ExecStart=\(binary)")
            .write(to: check.appendingPathComponent("usbredir@.service"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(at: check.appendingPathComponent("usbredir@lab.service"),
                                                   withDestinationURL: check.appendingPathComponent("usbredir@.service"))
        let verify = try runCommandStatus(findExecutable("systemd-analyze")!,
                                          ["verify", "--man=no", check.appendingPathComponent("usbredir@lab.service").path],
                                          timeout: 60)
        #expect(verify.status == 0 && verify.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(verify.output)")
    }

    /// The maintainer scripts: postinst creates the group, postrm on purge
    /// removes only empty folders (user data stays).
    @Test(.requires(tools)) func maintainerScriptsCreateTheGroupAndLeaveUserData() throws {
        let control = try makeTemporaryDirectory("usbredir-deb-e")
        try runCommand("/usr/bin/dpkg-deb", ["-e", deb.path, control.path])
        let postinst = try String(contentsOf: control.appendingPathComponent("postinst"), encoding: .utf8)
        #expect(postinst.contains("groupadd --system usbredir"), "\(postinst)")
        let postrm = try String(contentsOf: control.appendingPathComponent("postrm"), encoding: .utf8)
        #expect(postrm.contains("rmdir --ignore-fail-on-non-empty") && !postrm.contains("rm -r"), "\(postrm)")
        for script in ["postinst", "postrm"] {
            #expect(FileManager.default.isExecutableFile(atPath: control.appendingPathComponent(script).path))
            #expect(try runCommandStatus("/bin/sh", ["-n", control.appendingPathComponent(script).path]).status == 0)
        }
        let md5sums = try String(contentsOf: control.appendingPathComponent("md5sums"), encoding: .utf8)
        #expect(md5sums.contains("  usr/bin/usbredir\n"), "\(md5sums)")
    }

    /// lintian: no errors, and no warning that is not overridden with its
    /// reason in dist/debian/lintian-overrides. A debug binary carries a
    /// RUNPATH into the Swift toolchain (custom-library-search-path, an
    /// error for a package) and no Debian package provides its Swift
    /// runtime libraries; those two tags, and only those, are the debug
    /// build's own and are not held against the package.
    @Test(.requires(tools)) func lintianFindsNoErrorAndNoUnexplainedWarning() throws {
        let lintian = try Self.built.get().lintian
        let debugOnly = ["custom-library-search-path"]
        let problems = lintian.split(separator: "\n").filter { line in
            (line.hasPrefix("E: ") || line.hasPrefix("W: ")) && !debugOnly.contains { line.contains(": \($0) ") || line.hasSuffix(": \($0)") }
        }
        #expect(problems.isEmpty, "lintian:\n\(lintian)")
    }
}

extension DebianPackageTests {
    /// Terminal text without overstrike (a character then a backspace).
    static func plain(_ text: String) -> String {
        var out: [Character] = []
        for c in text {
            if c == "\u{8}" { _ = out.popLast() } else { out.append(c) }
        }
        return String(out)
    }
}

struct PackageNotBuilt: Error, CustomStringConvertible {
    let found: [String]
    var description: String { "make-deb.sh built \(found), not one usbredir_*_amd64.deb" }
}
