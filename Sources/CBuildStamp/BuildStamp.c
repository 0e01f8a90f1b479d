#include "CBuildStamp.h"

/* `usbredir --version` names the git commit it was built from. SwiftPM
   cannot pass a value into a build without changing every target's flags
   (and rebuilding them all), so the commit is written into the built
   binary instead: scripts/stamp-commit.py finds this marker and overwrites
   the 40 placeholder bytes after it, in place (same length, NUL padded).
   It lives in C so that no optimiser folds the placeholder into the code
   that reads it. */
#define USBREDIR_STAMP_MARKER "usbredir-build-commit:"
#define USBREDIR_STAMP_MARKER_LENGTH 22

__attribute__((used)) static const volatile char stamp[USBREDIR_STAMP_MARKER_LENGTH + 41] =
    USBREDIR_STAMP_MARKER "????????????????????????????????????????";

const char *usbredir_build_commit(void) {
    /* Read through the volatile type: clang -O2 folds a plain read of a
       constant's initializer (the release build did, and dropped the array). */
    const volatile char *field = stamp + USBREDIR_STAMP_MARKER_LENGTH;
    return field[0] == '?' ? "" : (const char *)field;
}
