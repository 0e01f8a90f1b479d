import Devices
import Logging
import Profile

extension Reconciler {
    /// Binds present physical devices to assignments by `DeviceChoice` (the
    /// rule plan shows); a bound device that left is unplugged (its channel
    /// stays). Nothing that no rule matches is opened.
    func bindPhysicalDevices(_ profile: Profile) async {
        let present: [USBDeviceInfo]
        do {
            present = try await monitor.presentDevices()
        } catch {
            logger.warning("cannot list USB devices: \(error)")
            return
        }
        lastPresent = present
        var bound: [String: USBDeviceInfo] = [:]
        for (name, runner) in runners {
            if let device = await runner.boundDevice { bound[name] = device }
        }
        let chosen = DeviceChoice.desired(profile, present: present, bound: bound)
        for (name, device) in bound where chosen[name]?.key != device.key {
            await runners[name]?.unplug()
        }
        for assignment in profile.devices {
            guard let device = chosen[assignment.name], bound[assignment.name]?.key != device.key,
                  let runner = runners[assignment.name] else { continue }
            await open(device, for: runner)
        }
        let presentKeys = Set(present.map(\.key))
        failedOpens = failedOpens.filter { presentKeys.contains($0.key) }
    }

    private func open(_ info: USBDeviceInfo, for runner: AssignmentRunner) async {
        if failedOpens[info.key] != nil { return }
        do {
            let device = try await monitor.open(info)
            try await runner.plug(device, info: info, label: info.label)
        } catch {
            failedOpens[info.key] = "\(error)"
            logger.error("cannot open \(info.label): \(error)", metadata: ["assignment": "\(runner.name)"])
        }
    }
}
