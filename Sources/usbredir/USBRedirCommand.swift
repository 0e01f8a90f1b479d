import Common
import ArgumentParser

/// The `usbredir` command: reconciles YAML profiles into live usbredir sessions.
@main
struct USBRedirCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usbredir",
        abstract: "Redirect USB devices to virtual machines, driven by YAML profiles.",
        discussion: """
            A profile assigns local USB devices (physical, or virtual such as a disk \
            image served as a USB stick) to VMs reached over SPICE or raw usbredir TCP. \
            See usbredir(1) and usbredir-profile(5).
            """,
        version: USBRedirVersion.described,
        subcommands: [ApplyCommand.self, PlanCommand.self, ValidateCommand.self, StatusCommand.self, ListCommand.self, AttachCommand.self]
    )
}
