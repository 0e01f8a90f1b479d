@testable import Devices
import Foundation
import Glibc
import NIOConcurrencyHelpers
import Testing

/// The threads the blocking libusb calls run on: kept between calls (the
/// kernel's usbtest clears a halt or sets an interface in every iteration
/// of several cases), yet a call that blocks never holds up another.
@Suite struct BlockingThreadsTests {
    /// Runs `body` on `pool` and waits for it; false when it did not run in 10 s.
    private func runAndWait(on pool: BlockingThreads, _ body: @escaping @Sendable () -> Void = {}) -> Bool {
        let ran = ConditionLock(value: false)
        pool.run {
            body()
            ran.lock(); ran.unlock(withValue: true)
        }
        guard ran.lock(whenValue: true, timeoutSeconds: 10) else { return false }
        ran.unlock()
        return true
    }

    @Test func callsOneAfterAnotherShareOneThreadRatherThanEachMakingOne() {
        let pool = BlockingThreads()
        let caller = pthread_self()
        let onCaller = NIOLockedValueBox(false)
        for _ in 0..<10 {
            #expect(runAndWait(on: pool) { if pthread_equal(pthread_self(), caller) != 0 { onCaller.withLockedValue { $0 = true } } })
            usleep(2_000)   // the thread goes back to waiting after its job
        }
        #expect(!onCaller.withLockedValue { $0 }, "ran on the caller's thread")
        #expect(pool.started == 1, "\(pool.started) threads for 10 calls one after another")
    }

    @Test func aCallThatBlocksDoesNotHoldUpTheNext() {
        let pool = BlockingThreads()
        let release = ConditionLock(value: false)
        let blocked = ConditionLock(value: false)
        pool.run {
            blocked.lock(); blocked.unlock(withValue: true)
            _ = release.lock(whenValue: true, timeoutSeconds: 20)
            release.unlock()
        }
        #expect(blocked.lock(whenValue: true, timeoutSeconds: 10))
        blocked.unlock()
        // The first job holds its thread; this one must run meanwhile.
        #expect(runAndWait(on: pool))
        #expect(pool.started == 2)
        release.lock(); release.unlock(withValue: true)
    }

    @Test func theLibUSBCallsRunOffTheCallersThread() {
        let caller = pthread_self()
        let ran = ConditionLock(value: 0)
        libusbBlocking({ pthread_equal(pthread_self(), caller) != 0 }, then: { same in
            ran.lock(); ran.unlock(withValue: same ? 1 : 2)
        })
        #expect(ran.lock(whenValue: 2, timeoutSeconds: 10))
        ran.unlock()
    }
}
