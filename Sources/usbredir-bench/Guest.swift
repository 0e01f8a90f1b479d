// Guest view: the test guest reads and writes our stick (SPICE, qemu-xhci)
// and QEMU's own usb-storage in turn, in one boot (scripts/guest-bench.sh).
import Foundation

struct GuestResults {
    var mbps: [String: [String: [Double]]] = [:]   // op -> dev -> per round
    var errors: [String] = []
    let rounds: Int, mib: Int
    /// What our stick announced (uas: super with UAS, super, or high).
    let speed: String
    func med(_ op: String, _ dev: String) -> Double { median(mbps[op]?[dev] ?? []) }
    func ratio(_ op: String) -> Double { med(op, "ours") / med(op, "native") }
}

func runGuest(_ config: BenchConfig, speed: String) throws -> GuestResults {
    let rounds = config.quick ? 1 : 3, mib = 64
    progress("guest: one boot, \(rounds) round(s): read then write \(mib) MiB of each stick "
             + "(ours over SPICE announced at \(speed) speed, QEMU's usb-storage)")
    let child = try Child("/bin/bash", [config.guestScript, config.usbredir, config.outDir + "/guest-\(speed)",
                                        "\(rounds)", "\(mib)", speed], captureStdout: true)
    let (status, text) = child.output()
    var r = GuestResults(rounds: rounds, mib: mib, speed: speed)
    for line in text.split(separator: "\n") {
        if line.hasPrefix("GUEST error") { r.errors.append(String(line.dropFirst("GUEST error ".count))); continue }
        guard line.hasPrefix("GUEST ") else { continue }
        let f = fields(line)
        guard let op = f["op"], let dev = f["dev"], let v = Double(f["mbps"] ?? "") else { continue }
        r.mbps[op, default: [:]][dev, default: []].append(v)
    }
    if status != 0 { r.errors.append("guest-bench.sh exited with status \(status)") }
    return r
}

/// One block per boot (our stick with UAS, at super, then at high speed),
/// then what each step gains: the ratio of two boots' ratios to native (each
/// boot is its own reference, so load between them cancels).
func printGuest(_ boots: [GuestResults]) {
    print("")
    guard !boots.isEmpty else { print("== guest view: not measured"); return }
    for g in boots {
        let announced = g.speed == "uas" ? "super speed with UAS" : "\(g.speed) speed"
        print("== guest view: test guest on qemu-xhci (TCG), our stick at \(announced), \(g.mib) MiB dd O_DIRECT, "
              + "median of \(g.rounds) round(s), ours and native in turn in one boot")
        for (op, what) in [("read", "read (dd iflag=direct)"), ("write", "write (dd oflag=direct, fsync)")] {
            print(pad("   " + what, 36) + " ours (SPICE usbredir) " + lpad(fmt(g.med(op, "ours")), 8) + " MB/s"
                  + "   native usb-storage " + lpad(fmt(g.med(op, "native")), 8) + " MB/s"
                  + "   ratio " + fmt(g.ratio(op), 2) + "x")
        }
        for e in g.errors { print("   error: \(e)") }
    }
    func gain(_ what: String, _ a: String, over b: String) {
        guard let x = boots.first(where: { $0.speed == a }), let y = boots.first(where: { $0.speed == b }) else { return }
        print("   \(what) gains: reads " + fmt(x.ratio("read") / y.ratio("read"), 2) + "x, writes "
              + fmt(x.ratio("write") / y.ratio("write"), 2) + "x (ratio to native, \(a) over \(b))")
    }
    gain("SuperSpeed announcement", "super", over: "high")
    gain("UAS", "uas", over: "super")
}
