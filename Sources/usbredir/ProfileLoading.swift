import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Profile

/// Exit statuses of architecture.md.
enum Exit {
    static let runtimeFailure = ExitCode(1)
    static let invalidProfile = ExitCode(65)
}

/// Options every profile-reading command shares.
struct ProfileOptions: ParsableArguments {
    @Option(name: .long, help: "Use the hosts: section of this host instead of this machine's hostname.")
    var host: String?

    @Flag(help: "Treat warnings (an unset password variable, a password file others can read) as errors.")
    var strict = false
}

enum ProfileLoading {
    /// Loads a profile, printing its diagnostics to standard error.
    static func load(_ path: String, _ options: ProfileOptions, checkFiles: Bool = true,
                     printWarnings: Bool = true) -> (Profile?, [Diagnostic]) {
        var result = ProfileLoader.load(path: path, hostname: options.host, checkFiles: checkFiles)
        if options.strict { result = result.strict }
        for d in result.diagnostics where d.severity == .error || printWarnings {
            StandardStream.error(d.description + "\n")
        }
        return (result.profile, result.diagnostics)
    }
}
