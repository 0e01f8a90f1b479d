import CoreMetrics
import class Prometheus.PrometheusCollectorRegistry
import struct Prometheus.PrometheusMetricsFactory

/// Turns samples into Prometheus text exposition: swift-metrics' types on a
/// swift-prometheus registry of its own (no global bootstrap, so tests and
/// the tool do not share one). The sessions' counters are read when /metrics
/// is fetched and the series advanced by what they grew since the last
/// fetch: the transfer path pays nothing for metrics.
actor MetricsExporter {
    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private var sessions: [String: SessionSeries] = [:]
    private let resident: Gauge
    private let openFDs: Gauge

    init() {
        factory = PrometheusMetricsFactory(registry: registry)
        resident = Gauge(label: "process_resident_memory_bytes", factory: factory)
        openFDs = Gauge(label: "process_open_fds", factory: factory)
    }

    /// The page for one fetch: every running session and the process.
    func render(_ samples: [SessionSample], process: ProcessSample) -> [UInt8] {
        let keys = Set(samples.map(SessionSeries.key))
        // A session that is gone takes its series with it.
        for (key, series) in sessions where !keys.contains(key) {
            series.destroy()
            sessions[key] = nil
        }
        for sample in samples {
            let key = SessionSeries.key(sample)
            let series = sessions[key] ?? SessionSeries(sample, factory: factory)
            series.advance(to: sample)
            sessions[key] = series
        }
        resident.record(process.residentBytes)
        openFDs.record(process.openFDs)
        return registry.emitToBuffer()
    }
}
