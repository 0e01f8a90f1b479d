#ifndef USBREDIR_BUILD_STAMP_H
#define USBREDIR_BUILD_STAMP_H

/* The git commit the binary was built from ("" when not stamped). */
const char *usbredir_build_commit(void);

#endif
