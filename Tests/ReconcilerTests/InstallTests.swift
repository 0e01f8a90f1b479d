import Foundation
import Testing
import TestSupport

/// Issue 11: `make install` / `make uninstall` and the systemd unit. The
/// debug binary stands in for the release one (BINARY=), so CI builds nothing.
@Suite(.timeLimit(.minutes(3))) struct InstallTests {
    let usbredir = builtProduct("usbredir")
    let root = Guest.repositoryRoot.path

    static let installed = [
        "bin/usbredir",
        "share/man/man1/usbredir.1",
        "share/man/man5/usbredir-profile.5",
        "share/bash-completion/completions/usbredir",
        "share/zsh/site-functions/_usbredir",
        "share/fish/vendor_completions.d/usbredir.fish",
        "share/doc/usbredir/examples/lab.yaml",
        "lib/systemd/system/usbredir@.service",
    ]
    /// Outside PREFIX: udev reads /etc, /run and /usr/lib only.
    static let udevRule = "etc/udev/rules.d/70-usbredir.rules"

    func make(_ arguments: [String]) throws -> String {
        try runCommand("/usr/bin/make", ["-s", "-C", root] + arguments, timeout: 120)
    }

    /// Every regular file under `dir`, relative to it.
    func files(under dir: URL) -> [String] {
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey])
        var found: [String] = []
        while let url = e?.nextObject() as? URL {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true {
                found.append(String(url.standardizedFileURL.path.dropFirst(dir.standardizedFileURL.path.count + 1)))
            }
        }
        return found.sorted()
    }

    @Test(.requires(.tool("make")))
    func installPutsEveryFileUnderDestdirAndPrefixAndUninstallRemovesThemAll() throws {
        let destdir = try makeTemporaryDirectory("usbredir-install")
        try make(["install", "DESTDIR=\(destdir.path)", "PREFIX=/opt/ur", "BINARY=\(usbredir)"])
        let prefix = destdir.appendingPathComponent("opt/ur")
        #expect(files(under: destdir) == (Self.installed.map { "opt/ur/\($0)" } + [Self.udevRule]).sorted())
        let rule = try String(contentsOf: destdir.appendingPathComponent(Self.udevRule), encoding: .utf8)
        #expect(rule.contains("SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", MODE=\"0664\", GROUP=\"usbredir\""), "\(rule)")
        #expect(FileManager.default.isExecutableFile(atPath: prefix.appendingPathComponent("bin/usbredir").path))
        for completion in Self.installed.filter({ $0.contains("completion") || $0.contains("_usbredir") || $0.hasSuffix(".fish") }) {
            let text = try String(contentsOf: prefix.appendingPathComponent(completion), encoding: .utf8)
            #expect(text.contains("apply") && text.contains("status") && text.count > 200, "\(completion): \(text)")
        }
        let bash = try String(contentsOf: prefix.appendingPathComponent(Self.installed[3]), encoding: .utf8)
        #expect(bash.contains("complete -o filenames -F _usbredir usbredir"), "not a bash completion: \(bash.prefix(200))")
        let zsh = try String(contentsOf: prefix.appendingPathComponent(Self.installed[4]), encoding: .utf8)
        #expect(zsh.hasPrefix("#compdef usbredir"), "not a zsh completion: \(zsh.prefix(200))")
        let unit = try String(contentsOf: prefix.appendingPathComponent(Self.installed[7]), encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/ur/bin/usbredir apply /etc/usbredir/%i.yaml"), "\(unit)")
        #expect(!unit.contains("@BINDIR@"))
        #expect(try Data(contentsOf: prefix.appendingPathComponent("share/man/man1/usbredir.1"))
                == Data(contentsOf: URL(fileURLWithPath: root + "/man/usbredir.1")))

        // A file of someone else's in the same tree is left alone.
        let foreign = prefix.appendingPathComponent("bin/other")
        try "x".write(to: foreign, atomically: true, encoding: .utf8)
        try make(["uninstall", "DESTDIR=\(destdir.path)", "PREFIX=/opt/ur"])
        #expect(files(under: destdir) == ["opt/ur/bin/other"])
    }

    /// The unit as installed, checked by systemd itself: `systemd-analyze
    /// verify` works offline (no systemd as PID 1 needed). It loads the
    /// instance usbredir@lab.service, parses every directive (an unknown key,
    /// a bad Type= or a bad DeviceAllow= is a warning on its output) and
    /// checks that ExecStart's binary exists and is executable; `--man=no`
    /// skips looking up Documentation= pages. Any output fails the test.
    @Test(.requires(.all(.tool("make"), .tool("systemd-analyze", hint: "Debian package systemd"))))
    func theUnitPassesSystemdAnalyzeVerifyAndHasTheServiceContract() throws {
        let prefix = try makeTemporaryDirectory("usbredir-unit")
        try make(["install", "PREFIX=\(prefix.path)", "UDEVRULESDIR=\(prefix.path)/udev", "BINARY=\(usbredir)"])
        let unitDir = prefix.appendingPathComponent("lib/systemd/system")
        let instance = unitDir.appendingPathComponent("usbredir@lab.service")
        try FileManager.default.createSymbolicLink(at: instance, withDestinationURL: unitDir.appendingPathComponent("usbredir@.service"))
        let r = try runCommandStatus(findExecutable("systemd-analyze")!, ["verify", "--man=no", instance.path], timeout: 60)
        #expect(r.status == 0 && r.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(r.output)")

        let unit = try String(contentsOf: unitDir.appendingPathComponent("usbredir@.service"), encoding: .utf8)
        let lines = Set(unit.split(separator: "\n").map(String.init))
        for directive in ["Type=notify", "ExecStart=\(prefix.path)/bin/usbredir apply /etc/usbredir/%i.yaml",
                          "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                          "DeviceAllow=char-usb_device rw", "ProtectSystem=strict", "NoNewPrivileges=yes",
                          "RuntimeDirectory=usbredir", "StateDirectory=usbredir"] {
            #expect(lines.contains(directive), "missing \(directive)")
        }

        // The check has teeth: a misspelt directive is reported.
        let broken = unitDir.appendingPathComponent("broken@.service")
        try unit.replacingOccurrences(of: "DeviceAllow=", with: "DeviceAlow=").write(to: broken, atomically: true, encoding: .utf8)
        let bad = try runCommandStatus(findExecutable("systemd-analyze")!,
                                       ["verify", "--man=no", unitDir.appendingPathComponent("broken@lab.service").path], timeout: 60)
        #expect(bad.output.contains("Unknown key"), "\(bad.output)")
    }
}
