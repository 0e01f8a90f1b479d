#!/usr/bin/python3
"""The emulated USB bus for the libusb tests. Must run under
umockdev-wrapper. Builds bus 1: root hub usb1, hub 1-1, a mass-storage
stick at 1-1.1 and a HID keyboard at 1-1.2, then prints

    ROOT <testbed dir>     (the UMOCKDEV_DIR the libusb process needs)
    READY

and serves line commands on a unix socket (--control PATH), one reply line
each: `plug stick|keyboard`, `unplug stick|keyboard`, `state NAME` (JSON),
`busy NAME 1|0`, `quit`. Exits when stdin closes (the test died)."""

import argparse
import json
import os
import socket
import sys
import threading

sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gi  # noqa: E402
gi.require_version('UMockdev', '1.0')
from gi.repository import GLib, UMockdev  # noqa: E402

from devices import Hub, Keyboard, RootHub, Stick  # noqa: E402


def log(message):
    sys.stderr.write('testbed: %s\n' % message)
    sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--image', required=True)
    parser.add_argument('--control', required=True)
    parser.add_argument('--absent', action='append', default=[], help='device not plugged at start')
    args = parser.parse_args()

    testbed = UMockdev.Testbed.new()
    lock = threading.RLock()
    devices = {'stick': Stick(testbed, '1-1.1', 3, args.image, log), 'keyboard': Keyboard(testbed, '1-1.2', 4, log)}
    for hub in (RootHub(testbed, 1, log), Hub(testbed, '1-1', 2, log)):
        assert testbed.add_from_string(hub.record())
    for device in devices.values():   # every handler is serialised with the commands
        device._ioctl = serialised(lock, device._ioctl)
    for name, device in devices.items():
        if name not in args.absent:
            device.plug()

    loop = GLib.MainLoop()

    def command(line):
        words = line.split()
        if not words:
            return 'error empty'
        if words[0] == 'quit':
            loop.quit()
            return 'ok'
        device = devices.get(words[1]) if len(words) > 1 else None
        if device is None:
            return 'error unknown device'
        if words[0] == 'plug':
            device.plug()
        elif words[0] == 'unplug':
            device.unplug()
        elif words[0] == 'state':
            return json.dumps(device.state())
        elif words[0] == 'busy':
            device.busy = words[2] == '1'
        else:
            return 'error unknown command'
        return 'ok'

    def on_main_loop(line):
        """Runs `command` in the main loop (where umockdev's objects live)
        and waits for its answer."""
        done = threading.Event()
        answer = []

        def run():
            with lock:
                try:
                    answer.append(command(line))
                except Exception as e:
                    answer.append('error %r' % e)
            done.set()
            return False
        GLib.idle_add(run)
        done.wait(10)
        return answer[0] if answer else 'error timeout'

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args.control)
    server.listen(4)
    threading.Thread(target=serve, args=(server, on_main_loop), daemon=True).start()
    threading.Thread(target=watch_stdin, args=(loop,), daemon=True).start()

    print('ROOT ' + testbed.get_root_dir(), flush=True)
    print('READY', flush=True)
    loop.run()
    os._exit(0)    # skip umockdev's teardown racing client threads


def serialised(lock, function):
    def wrapper(*a):
        with lock:
            return function(*a)
    return wrapper


def serve(server, on_main_loop):
    while True:
        connection, _ = server.accept()
        threading.Thread(target=serve_one, args=(connection, on_main_loop), daemon=True).start()


def serve_one(connection, on_main_loop):
    with connection, connection.makefile('rw') as f:
        for line in f:
            f.write(on_main_loop(line.strip()) + '\n')
            f.flush()


def watch_stdin(loop):
    sys.stdin.read()
    GLib.idle_add(loop.quit)


if __name__ == '__main__':
    main()
