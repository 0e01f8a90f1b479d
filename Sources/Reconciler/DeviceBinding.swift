#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
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
        let inUse = hostUse.reasons(for: DeviceChoice.guarded(profile, present: present))
        let chosen = DeviceChoice.desired(profile, present: present, bound: bound, hostUse: inUse)
        noteHostHeld(HostHeldDevice.all(in: profile, present: present, hostUse: inUse, chosen: chosen))
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

    /// Keeps what this pass left to the host for status, and logs each
    /// device once while it stays held.
    private func noteHostHeld(_ held: [HostHeldDevice]) {
        let before = Set(heldByHost.map(\.device))
        for h in held where !before.contains(h.device) {
            logger.notice("\(h.text)", metadata: ["assignment": "\(h.assignment)"])
        }
        heldByHost = held
    }

    /// Opens a chosen device for its runner. A device that failed (busy, a
    /// udev permission race) is retried with the endpoint backoff while it
    /// stays plugged; SIGHUP retries at once (`retryWaiting`).
    private func open(_ info: USBDeviceInfo, for runner: AssignmentRunner) async {
        if let failed = failedOpens[info.key], Date() < failed.retryAt { return }
        do {
            let device = try await monitor.open(info)
            try await runner.plug(device, info: info, label: info.label)
            failedOpens[info.key] = nil
        } catch {
            var failed = failedOpens[info.key] ?? FailedOpen(error: "")
            // A permission refusal says itself which node and why.
            let why = if case DeviceError.access(let text) = error { text } else { "cannot open \(info.label): \(error)" }
            let delay = failed.backoff.nextDelay()
            // One line per distinct failure, not one per attempt.
            if why != failed.error {
                logger.error("\(why); retrying", metadata: ["assignment": "\(runner.name)"])
                await runner.openFailed(why)
            }
            failed.error = why
            failed.retryAt = Date().addingTimeInterval(delay)
            failedOpens[info.key] = failed
            Task { [weak self] in
                try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                await self?.reconcile()
            }
        }
    }
}

/// A present device whose last open failed, and when to try again.
struct FailedOpen {
    var error: String
    var backoff = Backoff()
    var retryAt = Date.distantPast
}
