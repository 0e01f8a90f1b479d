import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Reconciler

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check profiles: schema, references, and the files they name.",
        discussion: "Prints FILE:LINE:COL diagnostics. Exits 65 when any profile has an error.")

    @OptionGroup var profileOptions: ProfileOptions

    @Argument(help: "Profiles to check.")
    var profiles: [String]

    func validate() throws {
        if profiles.isEmpty { throw ValidationError("give at least one profile") }
    }

    func run() async throws {
        var failed = false
        for path in profiles {
            let (loaded, _) = ProfileLoading.load(path, profileOptions)
            guard let profile = loaded else {
                failed = true
                continue
            }
            // Domains are looked up where libvirt answers; a warning either way.
            let warnings = await LibvirtCheck.warnings(profile)
            for w in warnings { StandardStream.error(w.description + "\n") }
            if profileOptions.strict && !warnings.isEmpty { failed = true } else { print("\(path): ok") }
        }
        if failed { throw Exit.invalidProfile }
    }
}
