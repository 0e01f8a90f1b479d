import ArgumentParser
import Foundation

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
            let (profile, _) = ProfileLoading.load(path, profileOptions)
            if profile == nil { failed = true } else { print("\(path): ok") }
        }
        if failed { throw Exit.invalidProfile }
    }
}
