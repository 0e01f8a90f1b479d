import NIOCore
import NIOPosix

/// The event loop a session lives on, as a Swift executor. The engine actor
/// runs its turns on it (its serial executor), and the session's tasks (the
/// reader of a bridged connection, receiving streams, the drain of packets
/// that must wait) prefer it (their task executor), so a transfer goes
/// from the socket through the engine to a
/// device that answers from memory and back to the socket on one thread:
/// no wake-up of another thread per round trip. The session's connections
/// are made on the same loop (`RedirectionSession.eventLoop`); one made
/// elsewhere still works, with a hop each way.
final class SessionLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(isolatedTo: self.asUnownedSerialExecutor(), taskExecutor: self.asUnownedTaskExecutor())
        }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(complexEquality: self)
    }

    func isSameExclusiveExecutionContext(other: SessionLoop) -> Bool {
        other === self
    }

    func checkIsolated() {
        eventLoop.preconditionInEventLoop()
    }
}
