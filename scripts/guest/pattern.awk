# The deterministic byte stream that `usbtest=write` puts on the disk.
# The guest (busybox awk) and the host (mawk, gawk) run this same file, so
# the host regenerates the expected bytes with:
#   awk -v seed=SEED -v mib=N -f scripts/guest/pattern.awk > expected.bin
#
# Output: N MiB = N*2048 sectors of 512 bytes. Sector k (0-based) is
#   sprintf("usbtest seed=%s sector=%010d ", SEED, k)
#   + the first (511 - that length) characters of the 64-character alphabet
#     A-Z a-z 0-9 + / repeated endlessly, starting at alphabet index k % 64
#   + "\n"
# Every sector is distinct and names its own position, so a swapped, lost or
# duplicated sector shows up in a hexdump. SEED: 1-64 chars of [A-Za-z0-9._-].
BEGIN {
  a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  fill = a
  while (length(fill) < 640) fill = fill a
  n = mib * 2048
  for (k = 0; k < n; k++) {
    head = sprintf("usbtest seed=%s sector=%010d ", seed, k)
    printf "%s%s\n", head, substr(fill, k % 64 + 1, 511 - length(head))
  }
}
