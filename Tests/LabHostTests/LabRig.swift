import Foundation
import TestSupport
import XCTest

/// One lab host and one target for the whole suite (booting them costs
/// tens of seconds under TCG; every case runs in the same two VMs).
///
/// Lab host devices (QEMU port -> Linux port path in the lab host):
///   stick A  usb-storage serial LABSTICK-A, port 2    -> 2-2 (SuperSpeed)
///   hub      usb-hub, port 1                          -> 1-1
///   stick B  usb-storage serial LABSTICK-B, port 1.1  -> 1-1.1 (full speed)
///   keyboard usb-kbd, port 1.2; tablet usb-tablet, port 1.3
///   serial   usb-serial (FTDI), port 1.4 -> 1-1.4, its far end `serial`
///   UAS      usb-uas + scsi-hd, port 3                -> 2-3 (SuperSpeed, streams)
///   stick D  usb-storage serial LABSTICK-D, port 1.6  -> 1-1.6, 8 MiB of ext2
///            (the guardrail case mounts it in the lab host)
///   audio    usb-audio (46f4:0002), port 4            -> 1-4 (full speed, iso OUT),
///            playing into `audioWav` on this machine
///   Gadget Zero (dummy_hcd, inside)                   -> 3-1 (high speed)
/// Target: two listening usb-redir devices on its qemu-xhci.
final class LabRig: @unchecked Sendable {
    /// The sticks' size; `make bench` reads 64 MiB through the chain.
    static let stickMiB = Int(ProcessInfo.processInfo.environment["LABHOST_STICK_MIB"] ?? "") ?? 4
    /// Stick D's size: not the others', so the target's disk is told apart by size.
    static let stickDMiB = stickMiB == 8 ? 12 : 8
    /// e2fsprogs' mke2fs (in /usr/sbin, often not on a user's PATH).
    static var mke2fs: String {
        findExecutable("mke2fs") ?? ["/usr/sbin/mke2fs", "/sbin/mke2fs"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "mke2fs"
    }
    let lab: LabHost
    let target: LabTarget
    let images: [String: String]          // serial -> image file on this host
    /// The far end of the lab host's usb-serial (FTDI, port 1.4 -> 1-1.4).
    let serial: UnixStream
    /// The wav file the lab host's usb-audio plays into (48 kHz S16LE stereo).
    let audioWav: String
    let dir: URL
    var timings: [(String, Double)] = []

    init() throws {
        dir = try makeTemporaryDirectory("usbredir-labrig")
        var t = Date()
        // `make bench` puts the release binary in the lab host.
        let binary = ProcessInfo.processInfo.environment["LABHOST_USBREDIR"] ?? builtProduct("usbredir")
        timings.append(("lab host build (cached when up to date)", try LabHost.build(binary: binary)))
        let a = try makeRandomImage(mib: Self.stickMiB, in: dir, name: "stick-a.img")
        let b = try makeRandomImage(mib: Self.stickMiB, in: dir, name: "stick-b.img")
        let u = try makeRandomImage(mib: Self.stickMiB, in: dir, name: "uas.img")
        let d = try makeRandomImage(mib: Self.stickDMiB, in: dir, name: "stick-d.img")
        try runCommand(LabRig.mke2fs, ["-q", "-F", "-t", "ext2", "-L", "LABSTICKD", d])
        images = ["LABSTICK-A": a, "LABSTICK-B": b, "UAS": u, "LABSTICK-D": d]
        audioWav = dir.appendingPathComponent("audio.wav").path

        t = Date()
        lab = try LabHost(devices: [
            .stick(id: "sticka", image: a, serial: "LABSTICK-A", port: "2"),
            .init("usb-hub,bus=usb.0,port=1,id=hub"),
            .stick(id: "stickb", image: b, serial: "LABSTICK-B", port: "1.1"),
            .init("usb-kbd,bus=usb.0,port=1.2,id=kbd"),
            .init("usb-tablet,bus=usb.0,port=1.3,id=tablet"),
            .serial(id: "serial", socket: dir.appendingPathComponent("serial.sock").path, port: "1.4"),
            .uasStick(id: "uas", image: u, port: "3"),
            .stick(id: "stickd", image: d, serial: "LABSTICK-D", port: "1.6"),
            .audio(id: "audio", wav: audioWav, port: "4"),
        ])
        // Opened now, so QEMU attaches the usb-serial before the lab host enumerates.
        serial = try UnixStream(path: dir.appendingPathComponent("serial.sock").path)
        var ports = [freeLoopbackPort()]
        while ports.count < 2 { let p = freeLoopbackPort(); if !ports.contains(p) { ports.append(p) } }
        target = try LabTarget(redirPorts: ports)
        try lab.waitUntilReady(timeout: 180)
        timings.append(("lab host boot to ctl ready", Date().timeIntervalSince(t)))
        try target.ctl.waitUntilServing(timeout: 120)
        timings.append(("target boot to ctl ready (booted alongside)", Date().timeIntervalSince(t)))
    }

    func stop() {
        lab.stop()
        target.stop()
        try? FileManager.default.removeItem(at: dir)
    }

    /// What the suite prints when something fails: both consoles' tails.
    var context: String {
        "lab host console:\n\(lab.vm.serial.suffix(3000))\ntarget console:\n\(target.vm.serial.suffix(2000))"
    }

    // MARK: usbredir apply inside the lab host

    /// Starts `usbredir apply` on `profile` in the lab host, in the
    /// background, under `name` (/tmp/NAME.yaml, .log, .pid, .status).
    func startApply(_ name: String, profile: String) throws {
        try lab.ctl.check("""
            cat >/tmp/\(name).yaml <<'PROFILE'
            \(profile)
            PROFILE
            rm -f /tmp/\(name).status
            ( usbredir apply /tmp/\(name).yaml --socket /run/\(name).sock >/tmp/\(name).log 2>&1 &
              echo $! >/tmp/\(name).pid; wait $!; echo $? >/tmp/\(name).status ) >/dev/null 2>&1 &
            """)
    }

    /// `startApply` of a profile with one assignment, `name`, of the device
    /// `match` selects (its lines, e.g. `port: "2-3"`), to the target's
    /// usb-redir device `index`.
    func redirect(_ name: String, match: [String], index: Int = 0) throws {
        let lines = ["version: 1", "endpoints:", "  target:", "    \(endpoint(index))", "devices:",
                     "  - name: \(name)", "    to: target", "    match:"] + match.map { "      \($0)" }
        try startApply(name, profile: lines.joined(separator: "\n"))
    }

    /// A shell line that prints the target's disks of `bytes` bytes (sdX),
    /// how the cases tell the redirected stick from the target's others.
    static func disksOfSize(_ bytes: Int) -> String {
        "for d in /sys/block/sd*; do [ -e $d ] && [ $(( $(cat $d/size) * 512 )) = \(bytes) ] && echo ${d##*/}; done"
    }

    /// A shell line that prints the driver bound to interface 0 of the lab
    /// host's device at `port` (`usb-storage`, `usbfs` while apply holds it).
    static func interfaceDriver(port: String) -> String {
        "readlink /sys/bus/usb/devices/\(port):1.0/driver | sed 's|.*/||'"
    }

    /// SIGTERM to that apply; waits until it exits and returns its status.
    func stopApply(_ name: String, timeout: Double = 20) throws -> Int {
        try lab.ctl.check("kill -TERM $(cat /tmp/\(name).pid)")
        try lab.ctl.pollUntil("apply \(name) exited", timeout: timeout, "cat /tmp/\(name).status") { $0.status == 0 }
        return Int(try lab.ctl.check("cat /tmp/\(name).status").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    func applyLog(_ name: String) -> String {
        (try? lab.ctl.run("tail -c 4000 /tmp/\(name).log").output) ?? "(no log)"
    }

    /// Polls the target (60 s, every 0.5 s) until what `script` prints
    /// shows the redirected device arrived (by default: it printed a line).
    /// A timeout throws with apply `name`'s log and the rig's context.
    func waitInTarget(_ what: String, apply name: String, _ script: String,
                      until arrived: (ControlPort.Result) -> Bool = { !$0.output.lines.isEmpty }) throws {
        do {
            try target.ctl.pollUntil(what, timeout: 60, every: 0.5, script, until: arrived)
        } catch {
            throw LabHostFailure("\(error)\napply log:\n\(applyLog(name))\n\(context)")
        }
    }

    /// The target resets the redirected device `vidpid` (`usbtest-run -R`:
    /// USBDEVFS_RESET on its node, as a guest driver's reset does). Records a
    /// failure unless the reset passed there and the lab host's kernel then
    /// logged a reset of `port`. Returns the target's run and the seconds
    /// until the lab host's reset showed (nil: it never did).
    func resetFromTarget(_ vidpid: String, port: String, apply name: String) throws -> (run: ControlPort.Result, reached: Double?) {
        let resets = "dmesg | grep -c 'usb \(port): reset' || true"
        let before = Int(try lab.ctl.check(resets).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let reset = try target.ctl.run("usbtest-run -R -t \(USBTestRun.caseTimeout) \(vidpid)", timeout: 90)
        XCTAssertEqual(reset.status, 0, "the reset in the target: \(reset)\napply log:\n\(applyLog(name))")
        XCTAssertTrue(reset.output.contains("USBTEST reset result=pass"), "\(reset)")
        let reached = try? lab.ctl.pollUntil("the lab host's kernel reset \(port)", timeout: 20, every: 0.5, resets) {
            (Int($0.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > before
        }
        XCTAssertNotNil(reached, "no reset of \(port) in the lab host's dmesg:\n\((try? lab.ctl.run("dmesg | tail -20").output) ?? "")"
                        + "\napply log:\n\(applyLog(name))")
        return (reset, reached)
    }

    // MARK: Gadget Zero through a redirecting tool

    enum Tool: String { case usbredir, usbredirect }

    struct ToolRun {
        let run: ControlPort.Result
        let outcomes: [Int: USBTestRun.Outcome]
        /// Seconds from starting the tool to usbtest bound in the target.
        let attached: Double
        /// usbredir apply's exit status after SIGTERM (nil for usbredirect).
        let exitStatus: Int?
        var log: String
        /// CPU the tool's process used while the cases ran (all its threads).
        let cpuSeconds: Double?
    }

    /// Redirects Gadget Zero through `tool` to `target`'s usb-redir device
    /// `index`, runs the usbtest `cases` there once usbtest is bound, then
    /// stops the tool and waits until the target has let go of the device.
    func usbtest(through tool: Tool, to target: LabTarget, index: Int, cases: [Int]) throws -> ToolRun {
        let port = target.redirPorts[index]
        let start = Date()
        switch tool {
        case .usbredir:
            try startApply("zero", profile: """
                version: 1
                endpoints:
                  target:
                    usbredir: 10.0.2.2:\(port)
                devices:
                  - name: gadget-zero
                    to: target
                    match:
                      vendor: 0x0525
                      product: 0xa4a0
                """)
        case .usbredirect:
            try lab.ctl.check("usbredirect --device 0525:a4a0 --to 10.0.2.2:\(port) >/tmp/usbredirect.log 2>&1 & echo $! >/tmp/usbredirect.pid")
        }
        var exitStatus: Int?
        var stopped = false
        func stop() throws {
            stopped = true
            switch tool {
            case .usbredir: exitStatus = try stopApply("zero")
            case .usbredirect: try lab.ctl.check("kill $(cat /tmp/usbredirect.pid)")
            }
        }
        defer { if !stopped { try? stop() } }
        try target.ctl.pollUntil("usbtest bound to Gadget Zero in the target (\(tool))", timeout: 60, every: 0.5,
                                 USBTestRun.boundScript) { $0.status == 0 }
        let attached = Date().timeIntervalSince(start)
        let pid = tool == .usbredir ? "$(cat /tmp/zero.pid)" : "$(cat /tmp/usbredirect.pid)"
        let cpuBefore = cpuTicks(pid)
        let profiler = try LabProfiler.start(pid: pid, name: tool.rawValue, in: lab)
        let run = try target.ctl.run(USBTestRun.command(cases: cases), timeout: USBTestRun.commandTimeout)
        let cpuAfter = cpuTicks(pid)   // before the profile's report, which waits for perf
        profiler?.report()
        let cpu = cpuBefore.flatMap { before in cpuAfter.map { Double($0 - before) / 100 } }
        try stop()
        try target.ctl.pollUntil("Gadget Zero gone from the target (\(tool))", timeout: 30, every: 0.5,
                                 USBTestRun.boundScript) { $0.status != 0 }
        let log = tool == .usbredir ? applyLog("zero") : ((try? lab.ctl.run("tail -c 4000 /tmp/usbredirect.log").output) ?? "")
        return ToolRun(run: run, outcomes: USBTestRun.parse(run.output), attached: attached, exitStatus: exitStatus, log: log,
                       cpuSeconds: cpu)
    }

    /// utime + stime of process `pid` (a shell word) in the lab host, in clock ticks (100 per second).
    private func cpuTicks(_ pid: String) -> Int? {
        guard let out = try? lab.ctl.run("cut -d' ' -f14,15 /proc/\(pid)/stat").output else { return nil }
        let fields = out.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        return fields.count == 2 ? fields[0] + fields[1] : nil
    }

    /// A raw usbredir endpoint for the target's usb-redir device `index`.
    func endpoint(_ index: Int) -> String { "usbredir: 10.0.2.2:\(target.redirPorts[index])" }
}

extension String {
    /// The text's lines, trimmed, empty ones dropped.
    var lines: [String] {
        split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}
