import ArgumentParser
import Devices
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Profile
import Reconciler

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would do now: assignments, matched devices, endpoints, conflicts.",
        discussion: "With --detailed-exitcode: 0 when a running apply already runs this profile, 2 when changes are pending.")

    @OptionGroup var profileOptions: ProfileOptions

    @Flag(help: "Print the plan as JSON.")
    var json = false

    @Flag(name: .customLong("detailed-exitcode"), help: "Exit 0 when a running apply matches the profile, 2 when not.")
    var detailedExitcode = false

    @Option(help: "Status socket of the running apply to compare with.")
    var socket: String?

    @Argument(help: "The profile.")
    var profile: String

    func run() async throws {
        let (loaded, _) = ProfileLoading.load(profile, profileOptions, printWarnings: !json)
        guard let p = loaded else { throw Exit.invalidProfile }
        let present = (try? await DeviceMonitors.system().presentDevices()) ?? []
        let running = await StatusClient.query(socket ?? StatusSocket.path(forProfile: p.name))
        let plan = Plan.make(p, present: present, running: running, resolved: await Plan.resolvedAddresses(p),
                             hostUse: HostUse().reasons(for: DeviceChoice.guarded(p, present: present)))
        if json {
            print(String(decoding: try JSONEncoder.sortedKeys.encode(plan), as: UTF8.self))
        } else {
            plan.printText()
        }
        if detailedExitcode && !plan.upToDate { throw ExitCode(2) }
    }
}

extension Plan {
    /// The plan for people: endpoints, their assignments marked
    /// + (add), = (keep), ~ (update), - (remove), then conflicts.
    func printText() {
        print("profile \(profile)" + (host.map { " (host \($0))" } ?? "") + ": " + (runningApply ? (upToDate ? "running, up to date" : "running, changes pending")
                                                       : "not running"))
        for e in endpoints {
            print("endpoint \(e.name) (\(e.kind) \(e.address)\(e.resolved.map { " -> \($0)" } ?? ""))")
            for a in assignments where a.endpoint == e.name {
                let sign = switch a.action { case .add: "+"; case .keep: "="; case .update: "~" }
                print("  \(sign) \(a.name)  channel \(a.channel.map(String.init) ?? "auto")  device \(a.device ?? "none present")")
            }
        }
        for r in removals { print("  - \(r)") }
        for c in conflicts { print(c.text) }
        for h in heldByHost { print(h.text) }
    }
}
