"""A separate process watching flags in etcd: prints each change it sees, one line each.

``python -m tests.integration.flags.etcd_watcher PREFIX ENDPOINT...`` prints ``ready`` once the
first read is done, then ``<name> <value JSON>`` per change; it exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading

from resilience.circuit import Registry
from resilience.flags import EtcdSource, FlagChange, Flags


def main() -> None:
    prefix, endpoints = sys.argv[1], sys.argv[2:]
    lock = threading.Lock()

    def changed(change: FlagChange) -> None:
        spec = None if change.new is None else change.new.to_dict()
        with lock:
            sys.stdout.write(f"{change.name} {json.dumps(spec, sort_keys=True)}\n")
            sys.stdout.flush()

    flags = Flags(EtcdSource(endpoints, prefix, check_interval=1.0), registry=Registry())
    flags.on_change(None, changed)
    if not flags.ready(30):
        sys.stdout.write("not-ready\n")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the test closes our stdin
    flags.close()


if __name__ == "__main__":
    main()
