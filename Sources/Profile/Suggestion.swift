/// "did you mean" for misspelt keys and values.
enum Suggestion {
    /// The closest candidate, if it is close enough to be a likely typo: a
    /// few edits away (relative to its length), or a prefix such as `warn`
    /// for `warning`.
    static func closest(to word: String, in candidates: [String]) -> String? {
        let lower = word.lowercased()
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(lower, candidate)
            if distance < best?.distance ?? Int.max { best = (candidate, distance) }
        }
        if let best, best.distance <= max(1, best.candidate.count / 3) { return best.candidate }
        if lower.count >= 3, let prefixed = candidates.first(where: { $0.hasPrefix(lower) }) { return prefixed }
        return nil
    }

    /// `did you mean 'x'?`, or the whole list when nothing is close.
    static func hint(for word: String, in candidates: [String]) -> String {
        if let match = closest(to: word, in: candidates) { return "did you mean '\(match)'?" }
        return "expected one of: " + candidates.joined(separator: ", ")
    }

    /// Optimal string alignment distance: Levenshtein plus transposition of
    /// two neighbours, the commonest typo (`vnedor`).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}
