import Common
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Threads for the libusb calls that block in the kernel (clear halt, set
/// interface, set configuration, reset, open, close). A VM issues some of
/// them in bursts: the kernel's usbtest clears a halt or sets an interface
/// in every iteration of several cases, and a thread made and joined per
/// call costs more than the call itself inside a VM under emulation. So
/// threads stay: an idle one takes the next job; when none is idle a new
/// one starts (a device stuck in a reset never delays another device's
/// call), and one idle for `idleSeconds` ends.
final class BlockingThreads: @unchecked Sendable {
    static let shared = BlockingThreads()

    /// How long an idle thread waits for work before it ends.
    static let idleSeconds = 30

    private var mutex = pthread_mutex_t()
    private var workToDo = pthread_cond_t()
    private var jobs = CircularBuffer<@Sendable () -> Void>()
    private var idle = 0
    private var threadsStarted = 0

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&workToDo, nil)
    }

    /// Runs `job` on one of the threads, soon; never on the caller's thread
    /// unless no thread can be made at all (then here, rather than never).
    func run(_ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        jobs.append(job)
        let startOne = idle < jobs.count
        if startOne { threadsStarted += 1 } else { pthread_cond_signal(&workToDo) }
        pthread_mutex_unlock(&mutex)
        if startOne && !DetachedThread.start(name: "usbredir-libusb-blocking", { self.work() }) {
            if let job = take(waiting: false) { job() }
        }
    }

    /// One thread's life: jobs until it has been idle for `idleSeconds`.
    private func work() {
        while let job = take(waiting: true) { job() }
    }

    /// The next job; with `waiting`, waits for one up to `idleSeconds`.
    private func take(waiting: Bool) -> (@Sendable () -> Void)? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while jobs.isEmpty {
            guard waiting else { return nil }
            idle += 1
            var deadline = timespec()
            clock_gettime(CLOCK_REALTIME, &deadline)
            deadline.tv_sec += Self.idleSeconds
            let rc = pthread_cond_timedwait(&workToDo, &mutex, &deadline)
            idle -= 1
            if rc == ETIMEDOUT && jobs.isEmpty { return nil }
        }
        return jobs.removeFirst()
    }

    /// Threads started over the pool's life (tests: they are kept and reused).
    var started: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return threadsStarted
    }
}
