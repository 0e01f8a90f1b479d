import Foundation
import TestSupport

/// perf inside the lab host, for a person finding where a tool's time goes
/// (docs/labhost.md): with LABHOST_PERF=1 the lab host is built with perf
/// and symbols (scripts/build-labhost.sh), and each usbtest pass records
/// the tool's process (software clock, which works under TCG) and prints
/// the flat profile. Off (nil) otherwise; CI never sets it.
struct LabProfiler {
    let lab: LabHost
    let name: String

    static func start(pid: String, name: String, in lab: LabHost) throws -> LabProfiler? {
        guard ProcessInfo.processInfo.environment["LABHOST_PERF"] != nil else { return nil }
        try lab.ctl.check("perf record -e cpu-clock -F 499 -g -p \(pid) -o /tmp/perf-\(name).data >/tmp/perf-\(name).log 2>&1 & "
                          + "echo $! >/tmp/perf.pid; sleep 1")
        return LabProfiler(lab: lab, name: name)
    }

    /// Stops the recording (perf writes its data on SIGINT) and prints the profile.
    func report() {
        let flat = "perf report -i /tmp/perf-\(name).data --no-children --stdio --sort dso,sym -g none 2>&1 | grep -v '^#' | head -60"
        let threads = "perf report -i /tmp/perf-\(name).data --no-children --stdio --sort comm,dso -g none 2>&1 | grep -v '^#' | head -16"
        let out = try? lab.ctl.run("kill -INT $(cat /tmp/perf.pid); while kill -0 $(cat /tmp/perf.pid) 2>/dev/null; do sleep 1; done; "
                                   + "\(flat); \(threads)", timeout: 180)
        print("LABHOST perf (\(name)):\n\(out?.output ?? "no report")")
    }
}
