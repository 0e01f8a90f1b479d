"""usbdevfs (linux/usbdevice_fs.h) numbers and layouts for x86_64, as
libusb's Linux backend uses them. Values printed by a C program including
the kernel header, not computed, so a typo cannot hide here."""

CONTROL = 0xc0185500
SETINTERFACE = 0x80085504
SETCONFIGURATION = 0x80045505
GETDRIVER = 0x41045508
SUBMITURB = 0x8038550a
DISCARDURB = 0x550b
REAPURB = 0x4008550c
REAPURBNDELAY = 0x4008550d
CLAIMINTERFACE = 0x8004550f
RELEASEINTERFACE = 0x80045510
IOCTL = 0xc0105512
RESET = 0x5514
CLEAR_HALT = 0x80045515
DISCONNECT = 0x5516
CONNECT = 0x5517
GET_CAPABILITIES = 0x8004551a
DISCONNECT_CLAIM = 0x8108551b
ALLOC_STREAMS = 0x8008551c
FREE_STREAMS = 0x8008551d

# Capabilities we claim: zero packet, bulk continuation, no packet size
# limit, scatter-gather. Not REAP_AFTER_DISCONNECT: the mock node never
# reports POLLERR, so libusb learns of an unplug from URB statuses instead.
CAPS = 0x0f

# struct usbdevfs_urb
URB_SIZE = 56
URB_STATUS = 4
URB_BUFFER = 16
URB_BUFFER_LENGTH = 24
URB_ACTUAL_LENGTH = 28
URB_STREAM_ID = 36
URB_TYPE_ISO, URB_TYPE_INTERRUPT, URB_TYPE_CONTROL, URB_TYPE_BULK = 0, 1, 2, 3

# errno values the kernel puts in urb->status or returns from ioctl().
ENOENT, EAGAIN, EBUSY, ENODEV, EINVAL, ENOTTY = 2, 11, 16, 19, 22, 25
EPIPE, ENODATA, EOVERFLOW, ESHUTDOWN = 32, 61, 75, 108
