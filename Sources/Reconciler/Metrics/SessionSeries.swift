import CoreMetrics

/// The series of one session, labelled by assignment and endpoint. Counters
/// only go up: each fetch adds what the session's counter grew by; a counter
/// that went down (the assignment was restarted) adds its new value.
final class SessionSeries {
    private let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    private let states: [AssignmentState: Gauge]
    private let bytes: (in: Counter, out: Counter)
    private let transfers: (in: Counter, out: Counter)
    private let reconnects: Counter
    private let inFlight: Gauge
    private var errors: [String: Counter] = [:]
    private var last: SessionSample?

    static func key(_ s: SessionSample) -> String { "\(s.assignment)\u{0}\(s.endpoint)" }

    /// Every state, waiting-for-vm (libvirt) included: one gauge each.
    static let allStates = AssignmentState.allCases

    init(_ sample: SessionSample, factory: any MetricsFactory) {
        let dims = [("assignment", sample.assignment), ("endpoint", sample.endpoint)]
        func counter(_ name: String, _ extra: [(String, String)] = []) -> Counter {
            Counter(label: name, dimensions: dims + extra, factory: factory)
        }
        dimensions = dims
        self.factory = factory
        states = Dictionary(uniqueKeysWithValues: Self.allStates.map {
            ($0, Gauge(label: "usbredir_session_state", dimensions: dims + [("state", $0.rawValue)], factory: factory))
        })
        bytes = (counter("usbredir_bytes_total", [("direction", "in")]), counter("usbredir_bytes_total", [("direction", "out")]))
        transfers = (counter("usbredir_transfers_total", [("direction", "in")]),
                     counter("usbredir_transfers_total", [("direction", "out")]))
        reconnects = counter("usbredir_reconnects_total")
        inFlight = Gauge(label: "usbredir_transfers_in_flight", dimensions: dims, factory: factory)
    }

    func advance(to now: SessionSample) {
        let before = last
        func grow(_ counter: Counter, _ value: (SessionSample) -> Int) {
            let old = before.map(value) ?? 0
            let new = value(now)
            let delta = new >= old ? new - old : new
            if delta > 0 { counter.increment(by: delta) }
        }
        grow(bytes.in) { $0.counters.bytesIn }
        grow(bytes.out) { $0.counters.bytesOut }
        grow(transfers.in) { $0.counters.transfersIn }
        grow(transfers.out) { $0.counters.transfersOut }
        grow(reconnects) { $0.reconnects }
        for status in now.counters.errors.keys.sorted() {
            let counter = errors[status] ?? Counter(label: "usbredir_transfer_errors_total",
                                                    dimensions: dimensions + [("status", status)], factory: factory)
            errors[status] = counter
            grow(counter) { $0.counters.errors[status] ?? 0 }
        }
        for (state, gauge) in states { gauge.record(state == now.state ? 1 : 0) }
        inFlight.record(now.counters.transfersInFlight)
        last = now
    }

    func destroy() {
        states.values.forEach { $0.destroy() }
        [bytes.in, bytes.out, transfers.in, transfers.out, reconnects].forEach { $0.destroy() }
        errors.values.forEach { $0.destroy() }
        inFlight.destroy()
    }
}
