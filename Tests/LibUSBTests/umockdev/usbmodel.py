"""A USB device answering usbdevfs ioctls through umockdev's custom ioctl
handler: the kernel side of one /dev/bus/usb/BBB/DDD node.

URBs are kept in submission order and serviced when libusb reaps them
(libusb polls the mock node, a regular file, continuously), so a URB the
device cannot answer yet simply waits, as a NAKed transfer would on a bus.
Subclasses answer control requests and bulk/interrupt data."""

import struct
import time

import gi
gi.require_version('UMockdev', '1.0')
from gi.repository import UMockdev  # noqa: E402

import usbdevfs as U  # noqa: E402

STALL = 'stall'      # a result: the endpoint answers STALL
PENDING = None       # a result: nothing yet (NAK); ask again on the next reap


def device_descriptor(vendor, product, dev_class=0, mps0=64, bcd_usb=0x0200, bcd_device=0x0100, strings=(1, 2, 3)):
    return struct.pack('<BBHBBBBHHHBBBB', 18, 1, bcd_usb, dev_class, 0, 0, mps0, vendor, product, bcd_device,
                       strings[0], strings[1], strings[2], 1)


def config_descriptor(interfaces, attributes=0x80, max_power=50):
    """interfaces: list of (number, alt, class, subclass, protocol, extra_bytes, endpoints);
    endpoints: list of (address, attributes, max_packet, interval)."""
    body = b''
    for number, alt, cls, sub, proto, extra, endpoints in interfaces:
        body += struct.pack('<BBBBBBBBB', 9, 4, number, alt, len(endpoints), cls, sub, proto, 0) + extra
        for address, attrs, mps, interval in endpoints:
            body += struct.pack('<BBBBHB', 7, 5, address, attrs, mps, interval)
    count = len({i[0] for i in interfaces})
    return struct.pack('<BBHBBBBB', 9, 2, 9 + len(body), count, 1, 0, attributes, max_power) + body


def string_descriptor(text):
    data = text.encode('utf-16-le')
    return bytes([2 + len(data), 3]) + data


class URB:
    def __init__(self, data, buffer):
        raw = bytes(data.retrieve())
        self.data = data                 # IoctlData of struct usbdevfs_urb (written back on reap)
        self.buffer = buffer             # IoctlData of its buffer, or None
        self.type, self.endpoint = raw[0], raw[1]
        self.length = struct.unpack_from('<i', raw, U.URB_BUFFER_LENGTH)[0]
        self.stream_id = struct.unpack_from('<I', raw, U.URB_STREAM_ID)[0]
        self.address = data.client_addr  # what DISCARDURB names it by
        self.payload = bytes(buffer.retrieve()) if buffer is not None else b''
        self.submitted = time.monotonic()

    @property
    def is_in(self):
        if self.type == U.URB_TYPE_CONTROL:
            return self.payload[0] & 0x80 != 0
        return self.endpoint & 0x80 != 0

    def finish(self, status, data=b'', actual=None):
        """Writes status, actual length and IN data into the client's URB."""
        offset = 8 if self.type == U.URB_TYPE_CONTROL else 0
        if data:
            data = data[:self.length - offset]
            self.buffer.update(offset, data)
        n = len(data) if actual is None else actual
        self.data.update(U.URB_STATUS, struct.pack('<i', status))
        self.data.update(U.URB_ACTUAL_LENGTH, struct.pack('<i', n))


class USBModel:
    """One emulated device. Port paths name it as the kernel does (1-1.2)."""

    def __init__(self, testbed, port, devnum, speed, descriptor, configuration, strings, drivers, log):
        self.testbed = testbed
        self.port = port
        self.bus = int(port.split('-')[0])
        self.devnum = devnum
        self.speed = speed                  # sysfs speed: "1.5", "12", "480", "5000"
        self.descriptor = descriptor
        self.configuration = configuration
        self.strings = strings              # index -> text (1 manufacturer, 2 product, 3 serial)
        self.kernel_drivers = dict(drivers)  # interface -> bound kernel driver name
        self.initial_drivers = dict(drivers)
        self.generation = 0                 # plugs so far; a handler serves one
        self.log = log
        self.devnode = '/dev/bus/usb/%03d/%03d' % (self.bus, devnum)
        self.handler = None
        self.urbs = []                      # submitted, not yet reaped, in order
        self.done = []                      # finished, waiting for a reap
        self.gone = False
        self.busy = False                   # claimed by "another process"
        self.halted = set()
        self.claimed = set()
        self.config_value = 1
        self.alt = {}
        self.counters = {'clear_halt': 0, 'reset': 0, 'discard': 0, 'control_clear_feature': 0}
        self.last_stream_id = 0
        self.streams = {}

    # -- sysfs ----------------------------------------------------------------

    def syspath(self):
        parts = self.port.split('-')[1].split('.')
        path = '/devices/usb%d' % self.bus
        for i in range(len(parts)):
            path += '/%d-%s' % (self.bus, '.'.join(parts[:i + 1]))
        return path

    def record(self):
        desc = self.descriptor + self.configuration
        attrs = {'busnum': self.bus, 'devnum': self.devnum, 'speed': self.speed,
                 'bConfigurationValue': self.config_value,
                 'idVendor': '%04x' % struct.unpack_from('<H', self.descriptor, 8),
                 'idProduct': '%04x' % struct.unpack_from('<H', self.descriptor, 10),
                 'bDeviceClass': '%02x' % self.descriptor[4], 'devpath': self.port.split('-')[1]}
        names = {1: 'manufacturer', 2: 'product', 3: 'serial'}
        for index, text in self.strings.items():
            if index in names:
                attrs[names[index]] = text
        lines = ['P: ' + self.syspath(), 'N: ' + self.devnode[5:],
                 'E: SUBSYSTEM=usb', 'E: DEVTYPE=usb_device', 'E: DRIVER=usb',
                 'E: BUSNUM=%03d' % self.bus, 'E: DEVNUM=%03d' % self.devnum, 'E: DEVNAME=' + self.devnode]
        lines += ['A: %s=%s\\n' % (k, v) for k, v in attrs.items()]
        lines.append('H: descriptors=' + desc.hex())
        return '\n'.join(lines) + '\n'

    # Device numbers for replugged devices, past the ones the testbed hands out.
    next_devnum = 10

    def plug(self):
        """Attaches the ioctl handler first, so libusb can open the device as
        soon as the add uevent announces it. A replugged device gets a new
        device number, as the kernel gives it, hence a new node: the old node
        keeps its handler, which answers the old handles with ENODEV."""
        if self.handler is not None:
            self.devnum = USBModel.next_devnum
            USBModel.next_devnum += 1
            self.devnode = '/dev/bus/usb/%03d/%03d' % (self.bus, self.devnum)
            self.urbs, self.done = [], []
            self.halted.clear()
            self.claimed.clear()
            self.kernel_drivers = dict(self.initial_drivers)   # the kernel binds its drivers again
            self.config_value = 1
            self.alt = {}
            self.reset_state()
        self.generation += 1
        self.gone = False
        self.handler = UMockdev.IoctlBase()
        self.handler.connect('handle-ioctl', self._on_ioctl, self.generation)
        assert self.testbed.attach_ioctl(self.devnode, self.handler)
        assert self.testbed.add_from_string(self.record())

    def unplug(self):
        """The device leaves: URBs in flight end as the kernel ends them
        (-ESHUTDOWN), every later ioctl fails with ENODEV."""
        self.gone = True
        for urb in self.urbs:
            urb.finish(-U.ESHUTDOWN)
            self.done.append(urb)
        self.urbs = []
        self.testbed.uevent('/sys' + self.syspath(), 'remove')
        self.testbed.remove_device('/sys' + self.syspath())

    def state(self):
        return {'port': self.port, 'gone': self.gone, 'claimed': sorted(self.claimed),
                'drivers': {str(k): v for k, v in self.kernel_drivers.items()},
                'config': self.config_value, 'alt': {str(k): v for k, v in self.alt.items()},
                'halted': sorted(self.halted), 'last_stream_id': self.last_stream_id,
                'streams': {str(k): v for k, v in self.streams.items()},
                'in_flight': len(self.urbs), **self.counters}   # in_flight: submitted, not finished

    # -- ioctls ---------------------------------------------------------------

    def _on_ioctl(self, handler, client, generation):
        if generation != self.generation:    # a handle on the node of an earlier plug
            client.complete(-1, U.ENODEV)
            return True
        try:
            return self._ioctl(client)
        except Exception as e:   # a bug in the model must not hang the client
            self.log('model error: %r' % e)
            client.complete(-1, U.EINVAL)
            return True

    def _u32(self, client):
        return struct.unpack('<I', bytes(client.get_arg().resolve(0, 4).retrieve()))[0]

    def _ioctl(self, client):
        req = client.get_request()
        reply = lambda res=0, err=0: client.complete(res, err)
        if req in (U.REAPURB, U.REAPURBNDELAY):
            return self._reap(client)
        if self.gone:
            reply(-1, U.ENODEV)
            return True
        if req == U.SUBMITURB:
            arg = client.get_arg()
            data = arg.resolve(0, U.URB_SIZE)
            length = struct.unpack_from('<i', bytes(data.retrieve()), U.URB_BUFFER_LENGTH)[0]
            buffer = data.resolve(U.URB_BUFFER, length) if length > 0 else None
            urb = URB(data, buffer)
            if urb.type == U.URB_TYPE_BULK:
                self.last_stream_id = urb.stream_id
            self.urbs.append(urb)
            reply()
        elif req == U.DISCARDURB:
            address = struct.unpack('<Q', bytes(client.get_arg().retrieve()))[0]
            urb = next((u for u in self.urbs if u.address == address), None)
            if urb is None:
                reply(-1, U.EINVAL)
            else:
                self.urbs.remove(urb)
                urb.finish(-U.ENOENT)
                self.done.append(urb)
                self.counters['discard'] += 1
                reply()
        elif req == U.GET_CAPABILITIES:
            client.get_arg().resolve(0, 4).update(0, struct.pack('<I', U.CAPS))
            reply()
        elif req in (U.CLAIMINTERFACE, U.DISCONNECT_CLAIM):
            number = self._u32(client)
            if self.busy:
                reply(-1, U.EBUSY)
            elif req == U.CLAIMINTERFACE and number in self.kernel_drivers:
                reply(-1, U.EBUSY)           # the kernel driver still holds it
            else:
                self.kernel_drivers.pop(number, None)
                self.claimed.add(number)
                reply()
        elif req == U.RELEASEINTERFACE:
            self.claimed.discard(self._u32(client))
            reply()
        elif req == U.GETDRIVER:
            d = client.get_arg().resolve(0, 260)
            number = struct.unpack_from('<I', bytes(d.retrieve()), 0)[0]
            if number in self.kernel_drivers:
                d.update(4, self.kernel_drivers[number].encode() + b'\0')
                reply()
            else:
                reply(-1, U.ENODATA)
        elif req == U.IOCTL:
            d = client.get_arg().resolve(0, 16)
            number, code = struct.unpack_from('<ii', bytes(d.retrieve()), 0)
            if code == U.DISCONNECT:
                if number in self.kernel_drivers:
                    self.kernel_drivers.pop(number)
                    self.counters.setdefault('detached', []).append(number)
                    reply()
                else:
                    reply(-1, U.ENODATA)
            elif code == U.CONNECT:
                self.counters.setdefault('attached', []).append(number)
                self.kernel_drivers[number] = self.default_driver(number)
                reply(1)                     # > 0: a driver bound (libusb reads 0 as none)
            else:
                reply(-1, U.ENOTTY)
        elif req == U.SETCONFIGURATION:
            value = self._u32(client)
            if self.claimed:
                reply(-1, U.EBUSY)
            else:
                self.config_value = value
                self.alt = {}
                self.testbed.set_attribute('/sys' + self.syspath(), 'bConfigurationValue', '%d\n' % value)
                reply()
        elif req == U.SETINTERFACE:
            number, alt = struct.unpack('<II', bytes(client.get_arg().resolve(0, 8).retrieve()))
            self.alt[number] = alt
            reply()
        elif req == U.CLEAR_HALT:
            self.halted.discard(self._u32(client) & 0xff)
            self.counters['clear_halt'] += 1
            reply()
        elif req == U.RESET:
            self.counters['reset'] += 1
            self.halted.clear()
            self.reset_state()
            reply()
        elif req in (U.ALLOC_STREAMS, U.FREE_STREAMS):
            d = client.get_arg().resolve(0, 8 + 30)
            raw = bytes(d.retrieve())
            count, neps = struct.unpack_from('<II', raw, 0)
            eps = list(raw[8:8 + neps])
            for ep in eps:
                if req == U.ALLOC_STREAMS:
                    self.streams[ep] = count
                else:
                    self.streams.pop(ep, None)
            reply(count if req == U.ALLOC_STREAMS else 0)
        else:
            reply(-1, U.ENOTTY)
        return True

    def _reap(self, client):
        if not self.done:
            self._service()
        if not self.done:
            client.complete(-1, U.ENODEV if self.gone else U.EAGAIN)
            return True
        urb = self.done.pop(0)
        client.get_arg().resolve(0, 8).set_ptr(0, urb.data)
        client.complete(0, 0)
        return True

    def _service(self):
        """Finishes the first URB of each endpoint that has an answer now."""
        seen = set()
        for urb in list(self.urbs):
            key = (urb.type == U.URB_TYPE_CONTROL, urb.endpoint)
            if key in seen:
                continue
            seen.add(key)
            result = self._answer(urb)
            if result is PENDING:
                continue
            self.urbs.remove(urb)
            if result == STALL:
                urb.finish(-U.EPIPE)
            elif isinstance(result, int) and not isinstance(result, bool):
                urb.finish(result)           # a negative errno status
            elif urb.is_in:
                urb.finish(0, result)
            else:
                urb.finish(0, actual=urb.length - (8 if urb.type == U.URB_TYPE_CONTROL else 0))
            self.done.append(urb)

    def _answer(self, urb):
        if urb.type == U.URB_TYPE_CONTROL:
            setup = urb.payload[:8]
            rt, req, value, index, length = struct.unpack('<BBHHH', setup)
            if rt == 0x02 and req == 1 and value == 0:   # CLEAR_FEATURE(ENDPOINT_HALT) as a raw URB
                # A real device clears its halt but the host's toggle state
                # stays stale; libusb_clear_halt is the right path, so the
                # model leaves the endpoint halted to tell them apart.
                self.counters['control_clear_feature'] += 1
                return b''
            standard = self.standard_control(rt, req, value, index, length)
            if standard is not PENDING:
                return standard
            return self.control(rt, req, value, index, length, urb.payload[8:8 + length])
        if urb.endpoint in self.halted:
            return STALL
        if urb.is_in:
            return self.data_in(urb)
        return self.data_out(urb)

    def standard_control(self, rt, req, value, index, length):
        if rt == 0x80 and req == 6:                       # GET_DESCRIPTOR
            kind, i = value >> 8, value & 0xff
            if kind == 1:
                return self.descriptor[:length]
            if kind == 2 and i == 0:
                return self.configuration[:length]
            if kind == 3:
                if i == 0:
                    return b'\x04\x03\x09\x04'[:length]
                if i in self.strings:
                    return string_descriptor(self.strings[i])[:length]
                return STALL
            return STALL
        if rt == 0x80 and req == 0:                       # GET_STATUS
            return b'\x00\x00'[:length]
        return PENDING

    # -- for subclasses -------------------------------------------------------

    def default_driver(self, number):
        return 'usbfs'

    def reset_state(self):
        pass

    def control(self, rt, req, value, index, length, data):
        return STALL

    def data_in(self, urb):
        return PENDING

    def data_out(self, urb):
        return b''
