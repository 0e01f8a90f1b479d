#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Profile
import ServiceLifecycle
import UnixSignals

/// The reconcile loop as a swift-service-lifecycle service: it runs passes
/// until the group shuts down gracefully (SIGINT or SIGTERM), then
/// disconnects every device. The group stops it before the status socket
/// and /metrics, so both still answer while devices are disconnected.
struct ReconcileLoop: Service {
    let controller: Controller
    let initial: Profile

    func run() async throws {
        await controller.serve(initial)
    }
}

/// What the process does with SIGINT, SIGTERM and SIGHUP before the
/// service group takes them over.
enum StopSignals {
    static let all = [SIGINT, SIGTERM, SIGHUP]

    /// A parent may have started us with these signals blocked (a child
    /// inherits its spawning thread's mask), so they are unblocked here; and
    /// ignored by default, so one that comes between two dispatch sources
    /// (or after the group ended) cannot kill the process mid-stop.
    static func prepare() {
        var set = sigset_t()
        sigemptyset(&set)
        for n in all { sigaddset(&set, n) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for n in all { signal(n, SIG_IGN) }
    }
}
