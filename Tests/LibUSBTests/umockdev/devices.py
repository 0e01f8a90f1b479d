"""The emulated devices: a hub, a Bulk-Only mass-storage stick over a small
image, and a HID boot keyboard."""

import os
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
    """USB mass storage, Bulk-Only Transport, SCSI transparent command set:
    enough of SPC/SBC for Linux's usb-storage and sd drivers. Answers TEST
    UNIT READY, REQUEST SENSE, INQUIRY (standard and EVPD pages 0x00, 0x80),
    MODE SENSE(6)/(10), READ CAPACITY(10)/(16), READ FORMAT CAPACITIES,
    READ(6)/(10)/(16), WRITE(6)/(10)/(16), VERIFY, SYNCHRONIZE CACHE, START
    STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL. A failed command ends with
    CHECK CONDITION (CSW status 1) and sense data for the next REQUEST SENSE;
    when the host expected data-in that never comes, the bulk IN endpoint
    stalls (as BOT 6.7.2 allows); unexpected data-out stalls bulk OUT.
    An unknown opcode fails with ILLEGAL REQUEST / INVALID COMMAND OPERATION
    CODE."""
    VENDOR, PRODUCT = 0x0951, 0x1666
    BULK_IN, BULK_OUT = 0x81, 0x02
    BLOCK = 512

    NO_SENSE = (0, 0, 0)
    INVALID_OPCODE = (0x05, 0x20, 0)
    LBA_OUT_OF_RANGE = (0x05, 0x21, 0)
    INVALID_FIELD = (0x05, 0x24, 0)

    def __init__(self, testbed, port, devnum, image, log, serial='STICK0001'):
        config = config_descriptor([(0, 0, 8, 6, 0x50, b'', [(self.BULK_IN, 2, 512, 0), (self.BULK_OUT, 2, 512, 0)])])
        super().__init__(testbed, port, devnum, '480', device_descriptor(self.VENDOR, self.PRODUCT),
                         config, {1: 'Emulated', 2: 'Test Stick', 3: serial}, {0: 'usb-storage'}, log)
        self.image = image
        self.serial = serial
        self.sense = self.NO_SENSE
        self.counters['commands'] = {}         # opcode (hex) -> times seen, for debugging
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
        cb = cbw[15:15 + cblen] + bytes(16)     # zero-padded: short CDBs read as zeros
        self.execute(tag, length, flags, cb)
        return b''

    def execute(self, tag, length, flags, cb):
        op = cb[0]
        key = '%02x' % op
        self.counters['commands'][key] = self.counters['commands'].get(key, 0) + 1
        is_in = flags & 0x80 != 0
        if op in (0x0a, 0x2a, 0x8a):                     # WRITE(6)/(10)/(16)
            lba, blocks = self._range(cb)
            if lba + blocks > self._blocks():
                return self._finish(tag, length, is_in, self.LBA_OUT_OF_RANGE)
            if is_in and length:
                return self._finish(tag, length, is_in, self.INVALID_FIELD)
            self.sense = self.NO_SENSE
            self.write_at, self.write_left = lba * self.BLOCK, min(blocks * self.BLOCK, length)
            self.csw = struct.pack('<IIIB', 0x53425355, tag, length - self.write_left, 0)
            self.phase = 'data-out' if self.write_left else 'status'
            return
        return self._finish(tag, length, is_in, self.scsi(cb))

    def _finish(self, tag, length, is_in, result):
        """result: the data for the host (bytes) or a failure's sense (tuple)."""
        if isinstance(result, tuple):
            self.sense, data, status = result, b'', 1
        else:
            data, status = result, 0
        data = data[:length] if is_in else b''
        self.csw = struct.pack('<IIIB', 0x53425355, tag, length - len(data), status)
        if data:
            self.pending_in = data
            self.phase = 'data-in'
        elif length and is_in:
            self.halted.add(self.BULK_IN)                # no data for an IN data stage: stall it
            self.phase = 'status'
        elif length:
            self.halted.add(self.BULK_OUT)               # data-out we will not take: stall it
            self.phase = 'status'
        else:
            self.phase = 'status'

    def scsi(self, cb):
        """Runs one command: bytes for the data-in stage, or a sense tuple."""
        op = cb[0]
        blocks = self._blocks()
        if op != 0x03:
            self.sense = self.NO_SENSE
        if op in (0x00, 0x1e, 0x1b, 0x35, 0x91):         # TEST UNIT READY, PREVENT ALLOW, START STOP, SYNC CACHE
            return b''
        if op == 0x03:                                   # REQUEST SENSE (fixed format), clears the sense
            k, asc, ascq = self.sense
            self.sense = self.NO_SENSE
            return bytes([0x70, 0, k, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])[:cb[4]]
        if op == 0x12:                                   # INQUIRY
            allocation = struct.unpack_from('>H', cb, 3)[0]
            if cb[1] & 1:                                # EVPD
                if cb[2] == 0x00:
                    return bytes([0, 0, 0, 2, 0x00, 0x80])[:allocation]
                if cb[2] == 0x80:
                    serial = self.serial.encode()
                    return (bytes([0, 0x80, 0, len(serial)]) + serial)[:allocation]
                return self.INVALID_FIELD
            if cb[2]:
                return self.INVALID_FIELD
            # Direct access, removable, SPC-2, response format 2.
            return (bytes([0, 0x80, 0x04, 0x02, 31, 0, 0, 0]) + b'Emulated' + b'Test Stick      ' + b'1.00')[:allocation]
        if op == 0x25:                                   # READ CAPACITY(10)
            return struct.pack('>II', min(blocks - 1, 0xffffffff), self.BLOCK)
        if op == 0x9e:                                   # SERVICE ACTION IN(16)
            if cb[1] & 0x1f != 0x10:                     # only READ CAPACITY(16)
                return self.INVALID_FIELD
            allocation = struct.unpack_from('>I', cb, 10)[0]
            return (struct.pack('>QI', blocks - 1, self.BLOCK) + bytes(20))[:allocation]
        if op == 0x23:                                   # READ FORMAT CAPACITIES
            allocation = struct.unpack_from('>H', cb, 7)[0]
            return (bytes([0, 0, 0, 8]) + struct.pack('>I', blocks) + bytes([2, 0, 2, 0]))[:allocation]
        if op in (0x1a, 0x5a):                           # MODE SENSE(6)/(10)
            ten = op == 0x5a
            page = cb[2] & 0x3f
            allocation = struct.unpack_from('>H', cb, 7)[0] if ten else cb[4]
            if page in (0x3f, 0x08):
                pages = bytes([0x08, 0x12]) + bytes(18)  # caching page, write cache off
            elif page in (0x1c, 0x00):
                pages = b''
            else:
                return self.INVALID_FIELD
            header = struct.pack('>HBBBBH', 6 + len(pages), 0, 0, 0, 0, 0) if ten else bytes([3 + len(pages), 0, 0, 0])
            return (header + pages)[:allocation]
        if op in (0x08, 0x28, 0x88):                     # READ(6)/(10)/(16)
            lba, count = self._range(cb)
            if lba + count > blocks:
                return self.LBA_OUT_OF_RANGE
            with open(self.image, 'rb') as f:
                f.seek(lba * self.BLOCK)
                return f.read(count * self.BLOCK)
        if op in (0x2f, 0x8f):                           # VERIFY(10)/(16)
            lba, count = self._range(cb)
            return b'' if lba + count <= blocks else self.LBA_OUT_OF_RANGE
        return self.INVALID_OPCODE

    @staticmethod
    def _range(cb):
        """(LBA, blocks) of READ/WRITE/VERIFY (6), (10) and (16)."""
        op = cb[0]
        if op in (0x08, 0x0a):
            return ((cb[1] & 0x1f) << 16) | struct.unpack_from('>H', cb, 2)[0], cb[4] or 256
        if op in (0x28, 0x2a, 0x2f):
            return struct.unpack_from('>I', cb, 2)[0], struct.unpack_from('>H', cb, 7)[0]
        return struct.unpack_from('>Q', cb, 2)[0], struct.unpack_from('>I', cb, 10)[0]

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

    def _blocks(self):
        return os.path.getsize(self.image) // self.BLOCK


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
