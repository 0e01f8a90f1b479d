/// Reads a profile file into a `Profile`, collecting every diagnostic it
/// can in one run (architecture.md: `FILE:LINE:COL: error: ...`).
public enum ProfileLoader {
    public struct Result: Sendable {
        /// nil when there is at least one error.
        public var profile: Profile?
        /// Errors and warnings, ordered by position.
        public var diagnostics: [Diagnostic]

        public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
        public var warnings: [Diagnostic] { diagnostics.filter { $0.severity == .warning } }
        public var isValid: Bool { profile != nil }

        /// `--strict`: warnings count as errors, so a profile with any is refused.
        public var strict: Result {
            guard !warnings.isEmpty else { return self }
            return Result(profile: nil, diagnostics: diagnostics.map { d in
                var d = d
                d.severity = .error
                return d
            })
        }
    }

    /// - Parameters:
    ///   - path: the profile; diagnostics name it as given here.
    ///   - hostname: selects the `hosts:` section (`--host`); nil means this
    ///     machine's hostname. Sections match the full name or the short one
    ///     (before the first dot), ignoring case.
    ///   - environment: for `password-env` (an unset variable is a warning).
    ///   - checkFiles: whether image, password and CA files must exist.
    public static func load(path: String, hostname: String? = nil,
                            environment: [String: String] = currentEnvironment(),
                            checkFiles: Bool = true) -> Result {
        let bytes: [UInt8]
        do {
            bytes = try Platform.readFile(path)
        } catch {
            let diagnostic = Diagnostic(severity: .error, file: path, line: 0, column: 0,
                                        message: "cannot read profile: \(error.description)")
            return Result(profile: nil, diagnostics: [diagnostic])
        }
        return load(bytes: bytes, path: path, hostname: hostname, environment: environment, checkFiles: checkFiles)
    }

    /// Same as `load(path:)` for text already in memory; `path` still gives
    /// the folder that relative paths start from.
    public static func load(contents: String, path: String, hostname: String? = nil,
                            environment: [String: String] = currentEnvironment(),
                            checkFiles: Bool = true) -> Result {
        load(bytes: Array(contents.utf8), path: path, hostname: hostname, environment: environment,
             checkFiles: checkFiles)
    }

    public static func currentEnvironment() -> [String: String] { Platform.environment() }

    public static func currentHostname() -> String? { Platform.hostname() }

    /// The `hosts:` key chosen for `hostname`, if any.
    public static func selectHost(_ hostname: String, among sections: [String]) -> String? {
        let full = hostname.lowercased()
        let short = full.split(separator: ".", maxSplits: 1).first.map(String.init) ?? full
        return sections.first { [full, short].contains($0.lowercased()) }
    }

    private static func load(bytes: [UInt8], path: String, hostname: String?, environment: [String: String],
                             checkFiles: Bool) -> Result {
        let absolutePath = Paths.absolute(path)
        let (root, syntax) = YAMLReader.parse(bytes, file: path)
        if root == nil && !syntax.isEmpty { return Result(profile: nil, diagnostics: syntax) }

        var decoder = ProfileDecoder(file: path, directory: Paths.directory(of: absolutePath),
                                     environment: environment, checkFiles: checkFiles)
        decoder.diagnostics = syntax
        let document = decoder.decodeDocument(root)
        // Each list a machine can end up with is checked; duplicates of a
        // finding about the global list are dropped below.
        decoder.crossCheck(document.devices, endpoints: document.endpoints)
        for host in document.hosts {
            decoder.crossCheck(document.devices + host.devices, endpoints: document.endpoints)
        }

        let selected = (hostname ?? currentHostname()).flatMap { selectHost($0, among: document.hosts.map(\.name)) }
        let diagnostics = ordered(decoder.diagnostics)
        guard !diagnostics.contains(where: { $0.severity == .error }), let version = document.version else {
            return Result(profile: nil, diagnostics: diagnostics)
        }
        let hostDevices = document.hosts.first { $0.name == selected }?.devices ?? []
        var profile = Profile(version: version, log: document.log,
                              endpoints: document.endpoints.compactMap(\.endpoint),
                              devices: (document.devices + hostDevices).compactMap(\.assignment),
                              sourcePath: absolutePath, selectedHost: selected)
        profile.metrics = document.metrics
        return Result(profile: profile, diagnostics: diagnostics)
    }

    /// By position, each finding once.
    private static func ordered(_ diagnostics: [Diagnostic]) -> [Diagnostic] {
        var seen = Set<Diagnostic>()
        let unique = diagnostics.filter { seen.insert($0).inserted }
        return unique.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
    }
}

extension Profile {
    /// Endpoints whose `password-env` variable is unset in `environment`:
    /// a warning for validate, an error for those endpoints in apply.
    public func endpointsWithUnsetPasswordVariable(environment: [String: String]) -> [String] {
        orderedEndpoints.compactMap { endpoint in
            if case .env(let name)? = endpoint.password, environment[name] == nil { return endpoint.name }
            return nil
        }
    }
}
