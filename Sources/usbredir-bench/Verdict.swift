// One verdict line per target (the engine: issue #20, per pinning; the rest: issue #9), with the measured value.
import Foundation

func printVerdicts(engines: [EngineResults], guest: GuestResults?, footprint: FootprintResults?) {
    print("")
    print("== verdict (engine: issue #20 targets, per pinning; the rest: issue #9)")
    func line(_ target: String, _ met: Bool?, _ value: String) {
        let word = met.map { $0 ? "MET" : "NOT MET" } ?? "NOT MEASURED"
        print("   " + pad(target, 64) + " " + pad(word, 13) + value)
    }
    for pinning in EnginePinning.allCases {
        engineVerdicts(engines.first { $0.pinning == pinning }, pinning, line)
    }
    for (op, target, goal) in [("read", "guest reads >= 0.7x native usb-storage (xhci)", 0.7),
                               ("write", "guest writes >= 0.5x native usb-storage (xhci)", 0.5)] {
        if let g = guest, g.ratio(op).isFinite {
            line(target, g.ratio(op) >= goal,
                 "\(fmt(g.ratio(op), 2))x (\(fmt(g.med(op, "ours"))) vs \(fmt(g.med(op, "native"))) MB/s)")
        } else { line(target, nil, "") }
    }
    if let f = footprint, let kb = f.rssKB {
        line("< 40 MB RSS with \(f.sessions) idle sessions", Double(kb) * 1024 / 1e6 < 40, mb(kb))
    } else { line("< 40 MB RSS with 8 idle sessions", nil, "") }
    if let f = footprint, let idle = f.idleCPUPercent {
        // The larger of the two readings: schedstat misses threads that ended, ticks are coarse.
        let worst = max(idle, f.idleCPUPercentFromStat ?? 0)
        line("idle CPU < 0.5% of one core (\(f.sessions) idle sessions)", worst < 0.5,
             fmt(worst, 3) + " % (larger of schedstat \(fmt(idle, 3)) % and ticks "
             + (f.idleCPUPercentFromStat.map { fmt($0, 2) } ?? "n/a") + " %)")
    } else { line("idle CPU < 0.5% of one core (8 idle sessions)", nil, "") }
}

typealias VerdictLine = (_ target: String, _ met: Bool?, _ value: String) -> Void

/// Issue #20: MB/s >= 1.0x in every bulk case; CPU per transfer <= 1.0x at
/// 4 and 16 in flight and <= 1.2x at 1; control round-trip p50 <= 1.1x.
func engineVerdicts(_ e: EngineResults?, _ pinning: EnginePinning, _ line: VerdictLine) {
    typealias Case = (EngineCase, ours: EngineStats, reference: EngineStats)
    func worst(_ cases: [Case], _ ratio: (EngineStats, EngineStats) -> Double, lowest: Bool) -> (Double, EngineCase)? {
        let rs = cases.map { (ratio($0.ours, $0.reference), $0.0) }.filter { $0.0.isFinite }
        return lowest ? rs.min { $0.0 < $1.0 } : rs.max { $0.0 < $1.0 }
    }
    let tag = " (\(pinning.short))"
    let cases = e?.cases ?? []
    let bulk = cases.filter { $0.0.kind != "ctl" }
    let mbps = "engine MB/s >= 1.0x reference, every bulk case" + tag
    if let (r, c) = worst(bulk, { $0.mbps / $1.mbps }, lowest: true) {
        line(mbps, r >= 1.0, "lowest \(fmt(r, 2))x (\(c.title))")
    } else { line(mbps, nil, "") }
    for (name, limit, match) in [("4 and 16", 1.0, { (n: Int) in n >= 4 }), ("1", 1.2, { (n: Int) in n == 1 })] {
        let target = "engine CPU per transfer <= \(fmt(limit, 1))x at \(name) in flight" + tag
        if let (r, c) = worst(bulk.filter { match($0.0.inflight) }, { $0.cpuPerTransfer / $1.cpuPerTransfer }, lowest: false) {
            line(target, r <= limit, "highest \(fmt(r, 2))x (\(c.title))")
        } else { line(target, nil, "") }
    }
    let control = "control GET_DESCRIPTOR p50 <= 1.1x reference" + tag
    if let ctl = cases.first(where: { $0.0.kind == "ctl" }) {
        let r = ctl.ours.p50 / ctl.reference.p50
        line(control, r <= 1.1, "\(fmt(r, 2))x (\(fmt(ctl.ours.p50)) vs \(fmt(ctl.reference.p50)) us)")
    } else { line(control, nil, "") }
    if e?.incomplete != nil { print("   (engine\(tag): incomplete; the lines above cover the cases measured)") }
    let errors = cases.reduce(0) { $0 + $1.ours.errors + $1.reference.errors }
    if errors > 0 { print("   (engine\(tag): \(errors) transfers failed verification; see the table)") }
}
