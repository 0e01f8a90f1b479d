#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging

/// The two servers apply runs beside the reconcile loop, bound before any
/// session starts; the service group then runs and stops them.
extension Controller {
    func startStatusServer() async throws -> StatusServer? {
        let reconciler = self.reconciler
        do {
            return try await StatusServer.start(path: socketPath) { await reconciler.report() }
        } catch let error as StatusSocketError {
            throw error
        } catch {
            logger.warning("status socket unavailable", metadata: ["path": "\(socketPath)", "error": "\(error)"])
            return nil
        }
    }

    /// Binds /metrics and the status page before anything starts: an
    /// address that is taken stops apply (exit 1), as a taken status socket does.
    func startMetricsServer() async throws -> MetricsServer? {
        guard let address = metricsAddress else { return nil }
        let (reconciler, exporter) = (self.reconciler, MetricsExporter())
        let page = StatusPageSource { await reconciler.report() }
        let routes = HTTPRoutes(metrics: { await exporter.render(await reconciler.samples(), process: .current()) },
                                status: { await page.model() })
        do {
            let server = try await MetricsServer.start(address) { await routes.reply(to: $0) }
            logger.info("serving metrics and the status page",
                        metadata: ["url": "http://\(address)/", "metrics": "http://\(address)/metrics"])
            return server
        } catch {
            throw MetricsServerError.bind(address, "\(error)")
        }
    }
}
