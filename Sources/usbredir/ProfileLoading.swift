import ArgumentParser
import Foundation
import Profile

/// Exit statuses of design.md.
enum Exit {
    static let runtimeFailure = ExitCode(1)
    static let invalidProfile = ExitCode(65)
}

/// Options every profile-reading command shares.
struct ProfileOptions: ParsableArguments {
    @Option(name: .long, help: "Use the hosts: section of this host instead of this machine's hostname.")
    var host: String?
}

enum ProfileLoading {
    /// Loads a profile, printing its diagnostics to standard error.
    static func load(_ path: String, host: String?, checkFiles: Bool = true,
                     printWarnings: Bool = true) -> (Profile?, [Diagnostic]) {
        let result = ProfileLoader.load(path: path, hostname: host, checkFiles: checkFiles)
        for d in result.diagnostics where d.severity == .error || printWarnings {
            FileHandle.standardError.write(Data((d.description + "\n").utf8))
        }
        return (result.profile, result.diagnostics)
    }
}
