#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

extension JSONEncoder {
    /// The encoder of every JSON document the tool prints or serves
    /// (status, list, plan, the status socket): keys sorted, so output is
    /// stable and diffable.
    public static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
