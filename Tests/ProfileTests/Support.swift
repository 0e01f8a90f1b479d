import Foundation
import Testing
@testable import Profile

/// A temporary folder with a profile and the files it refers to, removed
/// when the value goes away. Diagnostics are shown relative to the folder so
/// expectations read `p.yaml:3:5: error: ...`; the folder itself reads DIR.
final class Scratch {
    let directory: String

    init(files: [String: String] = [:]) throws {
        var template = Array((NSTemporaryDirectory() + "/profile-tests-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        directory = URL(fileURLWithPath: String(cString: made)).standardizedFileURL.path
        for (name, contents) in files { try write(name, contents) }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func path(_ name: String) -> String { directory + "/" + name }

    func write(_ name: String, _ contents: String) throws {
        let url = URL(fileURLWithPath: path(name))
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try contents.write(to: url, atomically: true, encoding: .utf8)
        // Password files as a careful lab keeps them (others get a warning).
        if name.hasSuffix(".pass") { chmod(url.path, 0o600) }
    }

    /// Writes `yaml` as `name` and loads it from disk.
    func load(_ yaml: String, name: String = "p.yaml", host: String = "testhost",
              environment: [String: String] = [:], checkFiles: Bool = true) throws -> ProfileLoader.Result {
        try write(name, yaml)
        return ProfileLoader.load(path: path(name), hostname: host, environment: environment, checkFiles: checkFiles)
    }

    func descriptions(_ result: ProfileLoader.Result) -> [String] {
        result.diagnostics.map {
            $0.description.replacingOccurrences(of: directory + "/", with: "").replacingOccurrences(of: directory, with: "DIR")
        }
    }
}

/// Diagnostics of `yaml` (loaded as p.yaml next to `files`), relative paths.
func diagnostics(_ yaml: String, files: [String: String] = [:], host: String = "testhost",
                 environment: [String: String] = [:]) throws -> [String] {
    let scratch = try Scratch(files: files)
    let result = try scratch.load(yaml, host: host, environment: environment)
    // Invariant of the loader: a profile exactly when there is no error.
    #expect(result.isValid == result.errors.isEmpty)
    return scratch.descriptions(result)
}

/// The usual head of a test profile: lines 1-7, devices start on line 8.
let head = """
    version: 1
    endpoints:
      vm1:
        spice: 127.0.0.1:5930
      rig:
        usbredir: 127.0.0.1:4000
    devices:

    """
