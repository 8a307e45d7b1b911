#!/usr/bin/env python3
"""An independent Modbus server for hazgate's tests: pymodbus (from PyPI) serves registers whose
values are encoded here with Python's struct module, so hazgate's decoder is checked against an
encoder it does not share.

Usage: server.py PORT SPEC_JSON [socket|rtu]
SPEC_JSON: a list of {"table": "holding"|"input"|"coil"|"discrete", "address": N,
"type": "u16"|"i16"|"u32"|"i32"|"u64"|"i64"|"f32"|"f64"|"bool", "order": "ABCD"|..., "value": V}
with protocol (0-based) addresses, all for unit id 1. Prints "ready" once listening.
"""
import asyncio
import json
import struct
import sys

import pymodbus
from pymodbus import FramerType
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer

try:  # pymodbus >= 3.10
    from pymodbus.datastore import ModbusDeviceContext as DeviceContext
except ImportError:  # pymodbus 3.6 - 3.9
    from pymodbus.datastore import ModbusSlaveContext as DeviceContext

FMT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q",
       "f32": ">f", "f64": ">d"}
FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def words(typ, order, value):
    """Register words for value: big-endian bytes A B C D ... reordered as named."""
    b = struct.pack(FMT[typ], int(value) if typ[0] in "ui" else float(value))
    if order == "DCBA":
        b = b[::-1]
    elif order == "BADC":
        b = b"".join(b[i + 1:i + 2] + b[i:i + 1] for i in range(0, len(b), 2))
    elif order == "CDAB":
        b = b"".join(b[i:i + 2] for i in reversed(range(0, len(b), 2)))
    elif order != "ABCD":
        raise ValueError(order)
    return [struct.unpack(">H", b[i:i + 2])[0] for i in range(0, len(b), 2)]


def context(spec):
    # Register/bit arrays by protocol address, then one block per table. A block starting at 1
    # serves protocol address 0 in every pymodbus 3.x (the datastore is 1-based internally).
    arrays = {t: [0] * 300 for t in FC}
    for e in spec:
        table = arrays[e["table"]]
        if e["type"] == "bool":
            table[e["address"]] = 1 if e["value"] else 0
        else:
            for k, w in enumerate(words(e["type"], e.get("order", "ABCD"), e["value"])):
                table[e["address"] + k] = w
    blocks = {
        t: ModbusSequentialDataBlock(1, [bool(v) for v in a] if FC[t] <= 2 else a)
        for t, a in arrays.items()
    }
    dev = DeviceContext(di=blocks["discrete"], co=blocks["coil"], hr=blocks["holding"],
                        ir=blocks["input"])
    try:
        return ModbusServerContext(devices={1: dev}, single=False)
    except TypeError:
        return ModbusServerContext(slaves={1: dev}, single=False)


async def main():
    port = int(sys.argv[1])
    spec = json.loads(sys.argv[2])
    framer = FramerType.RTU if len(sys.argv) > 3 and sys.argv[3] == "rtu" else FramerType.SOCKET
    print(f"pymodbus {pymodbus.__version__} on 127.0.0.1:{port} framer {framer.value}",
          file=sys.stderr, flush=True)
    await StartAsyncTcpServer(context=context(spec), address=("127.0.0.1", port), framer=framer)


if __name__ == "__main__":
    asyncio.run(main())
