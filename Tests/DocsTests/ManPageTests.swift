import Foundation
import Profile
import Testing
import TestSupport

/// The man pages document what the code has: every profile key the decoder
/// knows (usbredir-profile.5), every command and long flag the built CLI
/// offers (usbredir.1), and both pages pass `mandoc -Tlint -Wwarning`.
@Suite struct ManPageTests {
    // MARK: (a) profile keys, from the decoder's own tables

    @Test func everyProfileKeyIsDocumented() throws {
        let page = try MDoc(Docs.page("usbredir-profile.5"))
        let documented = Set(page.items(macro: "Ic"))
        for key in ProfileSchema.allKeys {
            #expect(documented.contains(key), "profile key '\(key)' has no '.It Ic \(key)' entry in man/usbredir-profile.5")
        }
    }

    /// Each mapping's keys are documented together, so a key that exists in
    /// two mappings (`log`, `devices`) is documented in each of them.
    @Test(arguments: ProfileSchema.tables.map(\.mapping))
    func eachMappingHasOneSubsectionWithAllItsKeys(_ mapping: String) throws {
        let keys = try #require(ProfileSchema.tables.first { $0.mapping == mapping }).keys
        let page = try MDoc(Docs.page("usbredir-profile.5"))
        let holders = page.subsections.filter { Set(MDoc.items(macro: "Ic", in: $0.lines)).isSuperset(of: keys) }
        #expect(!holders.isEmpty, """
            no subsection of man/usbredir-profile.5 documents all keys of the '\(mapping)' mapping \
            (\(keys.joined(separator: ", "))) as '.It Ic KEY' entries
            """)
    }

    @Test func theProfilePageDocumentsNoUnknownKey() throws {
        let page = try MDoc(Docs.page("usbredir-profile.5"))
        let known = Set(ProfileSchema.allKeys)
        for item in Set(page.items(macro: "Ic")) {
            #expect(known.contains(item), "man/usbredir-profile.5 documents '\(item)', which the profile decoder does not know")
        }
    }

    // MARK: (b) commands and flags, from the built binary's --help

    @Test func everySubcommandAndLongFlagIsDocumented() throws {
        let binary = try Docs.usbredirBinary()
        let root = Help(try runCommand(binary, ["--help"]))
        let subcommands = root.subcommands
        try #require(!subcommands.isEmpty, "no SUBCOMMANDS in `usbredir --help`:\n\(root.text)")
        let global = Set(root.longFlags)

        let page = try MDoc(Docs.page("usbredir.1"))
        let synopsis = page.section("SYNOPSIS")
        let commands = page.section("COMMANDS")
        try #require(!synopsis.isEmpty && !commands.isEmpty, "man/usbredir.1 needs SYNOPSIS and COMMANDS sections")

        for flag in global {
            #expect(page.items(macro: "Fl").contains(flag) || MDoc.flags(in: page.lines).contains(flag),
                    "global flag \(flag) is not documented in man/usbredir.1")
            #expect(MDoc.flags(in: synopsis).contains(flag), "global flag \(flag) is missing from the SYNOPSIS of man/usbredir.1")
        }
        for name in subcommands {
            let help = Help(try runCommand(binary, [name, "--help"]))
            let flags = help.longFlags.filter { !global.contains($0) }

            let form = MDoc.synopsisForm(of: name, in: synopsis)
            #expect(form != nil, "subcommand '\(name)' has no '.Nm usbredir' / '.Cm \(name)' form in the SYNOPSIS")
            let entry = MDoc.commandEntry(of: name, among: subcommands, in: commands)
            #expect(entry != nil, "subcommand '\(name)' has no '.It Cm \(name)' entry in COMMANDS")

            for flag in flags {
                if let form {
                    #expect(MDoc.flags(in: form).contains(flag), "\(name) \(flag) is missing from the SYNOPSIS of man/usbredir.1")
                }
                if let entry {
                    #expect(MDoc.items(macro: "Fl", in: entry).contains(flag),
                            "\(name) \(flag) has no '.It Fl \(flag.dropFirst())' entry under '.It Cm \(name)' in COMMANDS")
                }
            }
        }
    }

    // MARK: (c) mandoc lint

    @Test(.requires(Docs.mandocRequirement), arguments: ["usbredir.1", "usbredir-profile.5"])
    func mandocLintIsClean(_ name: String) throws {
        try Docs.mandocRequirement.require()
        let mandoc = try #require(Docs.mandoc)
        let path = Docs.root.appendingPathComponent("man/\(name)").path
        do {
            _ = try runCommand(mandoc, ["-Tlint", "-Wwarning", path])
        } catch let error as CommandError {
            Issue.record("mandoc -Tlint -Wwarning man/\(name) is not clean:\n\(error.output)")
        }
    }

    // MARK: The profile page's examples are real

    /// Every profile in EXAMPLES of usbredir-profile.5 is valid (the files it
    /// names are not there, so they are not checked).
    @Test func theProfileExamplesValidate() throws {
        let page = try MDoc(Docs.page("usbredir-profile.5"))
        let examples = MDoc.literalBlocks(in: page.section("EXAMPLES")).filter { $0.hasPrefix("version:") }
        try #require(examples.count >= 3, "expected the example profiles in EXAMPLES of man/usbredir-profile.5")
        for (index, text) in examples.enumerated() {
            for host in ["elsewhere", "bench1", "bench2"] {
                let result = ProfileLoader.load(contents: text, path: "/nonexistent/example\(index + 1).yaml", hostname: host,
                                                environment: [:], checkFiles: false)
                #expect(result.errors.isEmpty, "example \(index + 1) of usbredir-profile.5 (host \(host)): \(result.errors)")
            }
        }
    }

    /// The faulty profile in DIAGNOSTICS gives exactly the lines shown there.
    @Test func theDiagnosticsExampleIsWhatTheLoaderSays() throws {
        let page = try MDoc(Docs.page("usbredir-profile.5"))
        let blocks = MDoc.literalBlocks(in: page.section("DIAGNOSTICS"))
        let profile = try #require(blocks.first { $0.hasPrefix("version:") }, "no example profile in DIAGNOSTICS")
        let shown = try #require(blocks.first { $0.hasPrefix("lab.yaml:") }, "no example diagnostics in DIAGNOSTICS")
        // Folded lines continue indented; join them back into one line each.
        let expected = shown.split(separator: "\n").reduce(into: [String]()) { lines, line in
            if line.hasPrefix(" "), !lines.isEmpty {
                lines[lines.count - 1] += " " + line.trimmingCharacters(in: .whitespaces)
            } else {
                lines.append(String(line))
            }
        }
        let result = ProfileLoader.load(contents: profile, path: "lab.yaml", hostname: "x", environment: [:], checkFiles: false)
        #expect(result.diagnostics.map(\.description) == expected)
    }
}

// MARK: - Helpers

enum Docs {
    /// The package folder: Tests/DocsTests/ManPageTests.swift is three levels down.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func page(_ name: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent("man/\(name)"), encoding: .utf8)
    }

    /// Through the suite's one gate: skipped without mandoc, failed in CI.
    static let mandocRequirement = Requirement.tool(
        "mandoc", hint: "`scripts/install-deps.sh --all` (or apt-get install mandoc) installs it")

    static var mandoc: String? { findExecutable("mandoc") }

    /// The `usbredir` executable that `swift build --build-tests` puts next to
    /// the test bundle, whatever the scratch path. Building it is not this
    /// test's job.
    static func usbredirBinary() throws -> String {
        var folders = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        if let executable = Bundle.main.executableURL { folders.append(executable.deletingLastPathComponent()) }
        // macOS: the .xctest bundle sits in the products folder.
        folders.append(Bundle(for: BundleMarker.self).bundleURL.deletingLastPathComponent())
        var seen = Set<String>()
        folders = folders.map(\.standardizedFileURL).filter { seen.insert($0.path).inserted }
        for folder in folders {
            let candidate = folder.appendingPathComponent("usbredir").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        struct NotBuilt: Error, CustomStringConvertible { var description: String }
        throw NotBuilt(description: """
            the usbredir executable is not built next to the test bundle (looked in \
            \(folders.map(\.path).joined(separator: ", "))); build it first: swift build --build-tests
            """)
    }

    private final class BundleMarker {}
}

/// The parts of swift-argument-parser's help text the checks need.
struct Help {
    let text: String

    init(_ text: String) { self.text = text }

    /// Lines of a `NAME:` section, up to the next section.
    func section(_ name: String) -> [String] {
        var lines: [String] = []
        var inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            // A header is an upper-case word and a colon at the start of a line.
            if let colon = line.firstIndex(of: ":"), !line[..<colon].isEmpty,
               line[..<colon].allSatisfy({ $0.isUppercase }) {
                inside = line[..<colon] == Substring(name)
                continue
            }
            if inside { lines.append(String(line)) }
        }
        return lines
    }

    /// Subcommand names: the first word of lines indented by two spaces.
    var subcommands: [String] {
        section("SUBCOMMANDS").compactMap { line in
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
            let word = line.dropFirst(2).prefix { !$0.isWhitespace }
            guard let first = word.first, first.isLowercase else { return nil }   // not "See 'usbredir help …'"
            return String(word)
        }
    }

    /// `--name` of each option line (`  --host <host>`, `  -h, --help`).
    var longFlags: [String] {
        section("OPTIONS").compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("-") else { return nil }
            return trimmed.split(whereSeparator: { $0 == " " || $0 == "," }).first { $0.hasPrefix("--") }.map(String.init)
        }
    }
}

/// Just enough mdoc reading for the checks: sections, subsections, list
/// items, flags and literal displays.
struct MDoc {
    let lines: [String]

    init(_ source: String) { lines = source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }

    /// Lines of `.Sh NAME` up to the next `.Sh`.
    func section(_ name: String) -> [String] {
        var out: [String] = []
        var inside = false
        for line in lines {
            if line.hasPrefix(".Sh ") {
                inside = line.dropFirst(4).trimmingCharacters(in: .whitespaces) == name
                continue
            }
            if inside { out.append(line) }
        }
        return out
    }

    /// Every `.Ss` subsection with its lines, up to the next `.Ss` or `.Sh`.
    var subsections: [(title: String, lines: [String])] {
        var out: [(title: String, lines: [String])] = []
        var current: (title: String, lines: [String])?
        for line in lines {
            if line.hasPrefix(".Ss ") || line.hasPrefix(".Sh ") {
                if let current { out.append(current) }
                current = line.hasPrefix(".Ss ") ? (String(line.dropFirst(4)), []) : nil
                continue
            }
            current?.lines.append(line)
        }
        if let current { out.append(current) }
        return out
    }

    func items(macro: String) -> [String] { Self.items(macro: macro, in: lines) }

    /// The first argument of `.It MACRO ARG ...` items; for `Fl`, as the
    /// flag renders (`.It Fl -json` is `--json`).
    static func items(macro: String, in lines: [String]) -> [String] {
        lines.compactMap { line in
            let words = line.split(separator: " ")
            guard words.count >= 3, words[0] == ".It", words[1] == Substring(macro) else { return nil }
            return macro == "Fl" ? "-" + words[2] : String(words[2])
        }
    }

    /// Every flag given to an `Fl` macro, as rendered: `.Op Fl -host Ar name`
    /// gives `--host`, `.Fl h | -help` gives `-h` and `--help`.
    static func flags(in lines: [String]) -> Set<String> {
        var out = Set<String>()
        for line in lines where line.hasPrefix(".") {
            var inFl = false
            for word in line.dropFirst().split(separator: " ") {
                if word == "Fl" { inFl = true; continue }
                if isMacro(word) { inFl = false; continue }
                if inFl, word.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) { out.insert("-" + word) }
            }
        }
        return out
    }

    private static func isMacro(_ word: Substring) -> Bool {
        (2...3).contains(word.count) && word.first!.isUppercase && word.dropFirst().allSatisfy(\.isLowercase)
    }

    /// The SYNOPSIS form (from `.Nm` to the next `.Nm`) whose command is `name`.
    static func synopsisForm(of name: String, in synopsis: [String]) -> [String]? {
        var forms: [[String]] = []
        for line in synopsis {
            if line.hasPrefix(".Nm") { forms.append([]) }
            if !forms.isEmpty { forms[forms.count - 1].append(line) }
        }
        return forms.first { form in form.first { $0.hasPrefix(".Cm ") } == ".Cm \(name)" }
    }

    /// The COMMANDS entry `.It Cm name ...`, up to the entry of the next command.
    static func commandEntry(of name: String, among commands: [String], in section: [String]) -> [String]? {
        func command(_ line: String) -> String? {
            let words = line.split(separator: " ")
            guard words.count >= 3, words[0] == ".It", words[1] == "Cm", commands.contains(String(words[2])) else { return nil }
            return String(words[2])
        }
        guard let start = section.firstIndex(where: { command($0) == name }) else { return nil }
        let rest = section[(start + 1)...]
        let end = rest.firstIndex { command($0) != nil } ?? section.endIndex
        return Array(section[start..<end])
    }

    /// The text of each `.Bd -literal` display, mdoc escapes undone.
    static func literalBlocks(in lines: [String]) -> [String] {
        var blocks: [String] = []
        var current: [String]?
        for line in lines {
            if line.hasPrefix(".Bd -literal") { current = []; continue }
            if line.hasPrefix(".Ed"), let block = current {
                blocks.append(block.joined(separator: "\n") + "\n")
                current = nil
                continue
            }
            current?.append(unescape(line))
        }
        return blocks
    }

    static func unescape(_ line: String) -> String {
        line.replacingOccurrences(of: "\\&", with: "")
            .replacingOccurrences(of: "\\(dq", with: "\"")
            .replacingOccurrences(of: "\\e", with: "\\")
    }
}
