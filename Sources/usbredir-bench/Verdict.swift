// One verdict line per target of issue #9, with the measured value.
import Foundation

func printVerdicts(engine: EngineResults?, guest: GuestResults?, footprint: FootprintResults?) {
    print("")
    print("== verdict (issue #9 targets)")
    func line(_ target: String, _ met: Bool?, _ value: String) {
        let word = met.map { $0 ? "MET" : "NOT MET" } ?? "NOT MEASURED"
        print("   " + pad(target, 64) + " " + pad(word, 13) + value)
    }
    func worst(_ cases: [(EngineCase, ours: EngineStats, reference: EngineStats)],
               _ ratio: (EngineStats, EngineStats) -> Double, lowest: Bool) -> (Double, EngineCase)? {
        let rs = cases.map { (ratio($0.ours, $0.reference), $0.0) }.filter { $0.0.isFinite }
        return lowest ? rs.min { $0.0 < $1.0 } : rs.max { $0.0 < $1.0 }
    }
    if let e = engine, !e.cases.isEmpty {
        let loaded = e.cases.filter { $0.0.kind != "ctl" && $0.0.inflight >= 4 }
        if let (r, c) = worst(loaded, { $0.mbps / $1.mbps }, lowest: true) {
            line("engine MB/s >= 1.0x reference, every size at 4 and 16 in flight", r >= 1.0,
                 "lowest \(fmt(r, 2))x (\(c.title))")
        } else { line("engine MB/s >= 1.0x reference, every size at 4 and 16 in flight", nil, "") }
        if let (r, c) = worst(e.cases, { $0.cpuPerTransfer / $1.cpuPerTransfer }, lowest: false) {
            var value = "highest \(fmt(r, 2))x (\(c.title))"
            if let (rs, cs) = worst(e.cases, { $0.schedPerTransfer / $1.schedPerTransfer }, lowest: false) {
                value += "; schedstat: highest \(fmt(rs, 2))x (\(cs.title))"
            }
            line("engine host CPU per transfer <= 1.0x reference", r <= 1.0, value)
        } else { line("engine host CPU per transfer <= 1.0x reference", nil, "") }
        if let ctl = e.cases.first(where: { $0.0.kind == "ctl" }) {
            let r = ctl.ours.p50 / ctl.reference.p50
            line("control GET_DESCRIPTOR p50 <= 1.2x reference", r <= 1.2,
                 "\(fmt(r, 2))x (\(fmt(ctl.ours.p50)) vs \(fmt(ctl.reference.p50)) us)")
        } else { line("control GET_DESCRIPTOR p50 <= 1.2x reference", nil, "") }
        if e.incomplete != nil { print("   (engine: incomplete; the three lines above cover the cases measured)") }
        let errors = e.cases.reduce(0) { $0 + $1.ours.errors + $1.reference.errors }
        if errors > 0 { print("   (engine: \(errors) transfers failed verification; see the table)") }
    } else {
        line("engine MB/s >= 1.0x reference, every size at 4 and 16 in flight", nil, "")
        line("engine host CPU per transfer <= 1.0x reference", nil, "")
        line("control GET_DESCRIPTOR p50 <= 1.2x reference", nil, "")
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
