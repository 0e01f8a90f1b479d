import Devices
import Logging
import Profile

extension Reconciler {
    /// Binds present physical devices to assignments: each device goes to the
    /// first matching assignment in file order; a bound device that left is
    /// unplugged (its channel stays). Nothing that no rule matches is opened.
    func bindPhysicalDevices(_ profile: Profile) async {
        let present: [USBDeviceInfo]
        do {
            present = try await monitor.presentDevices()
        } catch {
            logger.warning("cannot list USB devices: \(error)")
            return
        }
        let presentKeys = Set(present.map(\.key))
        var taken: Set<String> = []
        for assignment in profile.devices {
            guard case .match = assignment.source, let runner = runners[assignment.name] else { continue }
            if let bound = await runner.boundDevice {
                if presentKeys.contains(bound.key) { taken.insert(bound.key); continue }
                await runner.unplug()
            }
        }
        for assignment in profile.devices {
            guard case .match(let rule) = assignment.source, let runner = runners[assignment.name],
                  await runner.boundDevice == nil else { continue }
            guard let device = present.first(where: { !taken.contains($0.key) && Self.matches(rule, $0) }) else { continue }
            taken.insert(device.key)
            await open(device, for: runner)
        }
        failedOpens = failedOpens.filter { presentKeys.contains($0.key) }
    }

    private func open(_ info: USBDeviceInfo, for runner: AssignmentRunner) async {
        if failedOpens[info.key] != nil { return }
        do {
            let device = try await monitor.open(info)
            try await runner.plug(device, info: info, label: info.label)
        } catch {
            failedOpens[info.key] = "\(error)"
            logger.error("cannot open \(info.label): \(error)", metadata: ["assignment": "\(runner.assignment.name)"])
        }
    }

    static func matches(_ rule: MatchRule, _ d: USBDeviceInfo) -> Bool {
        rule.matches(vendor: d.vendorID, product: d.productID, serial: d.serial, port: d.port)
    }
}
