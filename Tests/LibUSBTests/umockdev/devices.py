"""The emulated devices: a hub, a Bulk-Only mass-storage stick over a small
image, and a HID boot keyboard."""

import struct
import time

from usbmodel import USBModel, STALL, PENDING, device_descriptor, config_descriptor


class Hub(USBModel):
    """Only needs to exist (port paths 1-1.x hang below it); never opened."""

    def __init__(self, testbed, port, devnum, log):
        config = config_descriptor([(0, 0, 9, 0, 0, b'', [(0x81, 3, 1, 12)])], attributes=0xe0)
        super().__init__(testbed, port, devnum, '480', device_descriptor(0x05e3, 0x0608, dev_class=9, strings=(0, 1, 0)),
                         config, {1: 'USB2.0 Hub'}, {0: 'hub'}, log)


class RootHub(USBModel):
    def __init__(self, testbed, bus, log):
        config = config_descriptor([(0, 0, 9, 0, 0, b'', [(0x81, 3, 4, 12)])], attributes=0xe0)
        super().__init__(testbed, '%d-0' % bus, 1, '480', device_descriptor(0x1d6b, 0x0002, dev_class=9, strings=(3, 2, 1)),
                         config, {1: '0000:00:14.0', 2: 'EHCI Host Controller', 3: 'Linux'}, {0: 'hub'}, log)

    def syspath(self):
        return '/devices/usb%d' % self.bus


class Stick(USBModel):
    """USB mass storage, Bulk-Only Transport, SCSI transparent command set.
    Answers INQUIRY, READ CAPACITY(10), READ(10), WRITE(10), TEST UNIT READY,
    REQUEST SENSE, MODE SENSE(6); any other command with data-in stalls the
    bulk IN endpoint (as BOT 6.7.2 allows) and fails in the CSW."""
    VENDOR, PRODUCT = 0x0951, 0x1666
    BULK_IN, BULK_OUT = 0x81, 0x02
    BLOCK = 512

    def __init__(self, testbed, port, devnum, image, log, serial='STICK0001'):
        config = config_descriptor([(0, 0, 8, 6, 0x50, b'', [(self.BULK_IN, 2, 512, 0), (self.BULK_OUT, 2, 512, 0)])])
        super().__init__(testbed, port, devnum, '480', device_descriptor(self.VENDOR, self.PRODUCT),
                         config, {1: 'Emulated', 2: 'Test Stick', 3: serial}, {0: 'usb-storage'}, log)
        self.image = image
        self.reset_state()

    def default_driver(self, number):
        return 'usb-storage'

    def reset_state(self):
        self.phase = 'command'     # command -> data-in | data-out -> status
        self.pending_in = b''
        self.write_at = 0
        self.write_left = 0
        self.csw = None

    def control(self, rt, req, value, index, length, data):
        if rt == 0xa1 and req == 0xfe:      # Get Max LUN
            return b'\x00'
        if rt == 0x21 and req == 0xff:      # Bulk-Only Mass Storage Reset
            self.reset_state()
            return b''
        return STALL

    def data_out(self, urb):
        if self.phase == 'data-out':
            take = min(len(urb.payload), self.write_left)
            with open(self.image, 'r+b') as f:
                f.seek(self.write_at)
                f.write(urb.payload[:take])
            self.write_at += take
            self.write_left -= take
            if self.write_left == 0:
                self.phase = 'status'
            return b''
        cbw = urb.payload
        if len(cbw) != 31 or cbw[:4] != b'USBC':
            return STALL
        tag, length, flags, lun, cblen = struct.unpack_from('<IIBBB', cbw, 4)
        cb = cbw[15:15 + cblen]
        self.execute(tag, length, flags, cb)
        return b''

    def execute(self, tag, length, flags, cb):
        size = self._size()
        op = cb[0]
        data, status = None, 0
        if op == 0x00:                                   # TEST UNIT READY
            data = b''
        elif op == 0x03:                                 # REQUEST SENSE
            data = bytes([0x70, 0, 0, 0, 0, 0, 0, 10] + [0] * 10)
        elif op == 0x12:                                 # INQUIRY
            data = bytes([0, 0x80, 0x04, 0x02, 31, 0, 0, 0]) + b'Emulated' + b'Test Stick      ' + b'1.00'
        elif op == 0x25:                                 # READ CAPACITY(10)
            data = struct.pack('>II', size // self.BLOCK - 1, self.BLOCK)
        elif op == 0x1a:                                 # MODE SENSE(6)
            data = b'\x03\x00\x00\x00'
        elif op == 0x28:                                 # READ(10)
            lba, blocks = struct.unpack_from('>I', cb, 2)[0], struct.unpack_from('>H', cb, 7)[0]
            with open(self.image, 'rb') as f:
                f.seek(lba * self.BLOCK)
                data = f.read(blocks * self.BLOCK)
        elif op == 0x2a:                                 # WRITE(10)
            lba, blocks = struct.unpack_from('>I', cb, 2)[0], struct.unpack_from('>H', cb, 7)[0]
            self.write_at, self.write_left = lba * self.BLOCK, blocks * self.BLOCK
            self.csw = struct.pack('<IIIB', 0x53425355, tag, 0, 0)
            self.phase = 'data-out' if self.write_left else 'status'
            return
        else:
            status = 1
        residue = length - (len(data) if data is not None else 0)
        self.csw = struct.pack('<IIIB', 0x53425355, tag, max(residue, 0), status)
        if data is None and flags & 0x80 and length:
            self.halted.add(self.BULK_IN)                # unknown command: stall the data stage
            self.phase = 'status'
        elif data:
            self.pending_in = data[:length]
            self.phase = 'data-in'
        else:
            self.phase = 'status'

    def data_in(self, urb):
        if self.phase == 'data-in':
            chunk, self.pending_in = self.pending_in[:urb.length], self.pending_in[urb.length:]
            if not self.pending_in:
                self.phase = 'status'
            return chunk
        if self.phase == 'status':
            self.phase = 'command'
            return self.csw
        return PENDING      # no command: the device NAKs until one arrives

    def _size(self):
        with open(self.image, 'rb') as f:
            f.seek(0, 2)
            return f.tell()


# HID boot keyboard report descriptor (HID 1.11, appendix B.1).
KEYBOARD_REPORT_DESCRIPTOR = bytes.fromhex(
    '05010906a101050719e029e7150025017501950881029501750881019505'
    '7501050819012905910295017503910195067508150025650507190029658100c0')


class Keyboard(USBModel):
    """HID boot keyboard, low speed. Interrupt IN 0x81 (8-byte reports, one
    every 10 ms): report n presses key usage 4 + n % 26 ('a', 'b', ...).
    SET_REPORT(output) stores the LED byte, GET_REPORT(output) returns it.
    Vendor request 0x42 IN never answers (for timeouts); other unknown
    requests stall."""
    VENDOR, PRODUCT = 0x046d, 0xc31c
    INTERRUPT_IN = 0x81
    INTERVAL = 0.010

    def __init__(self, testbed, port, devnum, log, serial='KBD0001'):
        hid = struct.pack('<BBHBBBH', 9, 0x21, 0x0111, 0, 1, 0x22, len(KEYBOARD_REPORT_DESCRIPTOR))
        config = config_descriptor([(0, 0, 3, 1, 1, hid, [(self.INTERRUPT_IN, 3, 8, 10)])], attributes=0xa0)
        super().__init__(testbed, port, devnum, '1.5', device_descriptor(self.VENDOR, self.PRODUCT, mps0=8, bcd_device=0x4910),
                         config, {1: 'Emulated', 2: 'Test Keyboard', 3: serial}, {0: 'usbhid'}, log)
        self.reports = 0
        self.leds = 0
        self.last_report = 0.0

    def default_driver(self, number):
        return 'usbhid'

    def control(self, rt, req, value, index, length, data):
        if rt == 0x81 and req == 6 and value >> 8 == 0x22:   # GET_DESCRIPTOR(report), interface recipient
            return KEYBOARD_REPORT_DESCRIPTOR[:length]
        if rt == 0x21 and req == 0x09 and value >> 8 == 2:   # SET_REPORT(output): LEDs
            self.leds = data[0] if data else 0
            return b''
        if rt == 0xa1 and req == 0x01 and value >> 8 == 2:   # GET_REPORT(output)
            return bytes([self.leds])[:length]
        if rt == 0x21 and req == 0x0a:                       # SET_IDLE
            return b''
        if rt == 0xc0 and req == 0x42:                       # never answered
            return PENDING
        return STALL

    def data_in(self, urb):
        if urb.length < 8:
            return -75                                       # -EOVERFLOW: the report does not fit (babble)
        now = time.monotonic()
        if now < max(urb.submitted, self.last_report) + self.INTERVAL:
            return PENDING
        self.last_report = now
        report = bytes([0, 0, 4 + self.reports % 26, 0, 0, 0, 0, 0])
        self.reports += 1
        return report
