#!/usr/bin/env python3
"""Compares D-Bus introspection XML with the contract, dbus/com.tameflare.Daemon1.xml.

    compare_introspection.py CONTRACT LIVE [LIVE ...] [--unchecked INTERFACE ...]

Each LIVE file is what one object introspects as (busctl introspect
--xml-interface). Every interface in a LIVE file must be in the contract and
match it exactly: its methods (arguments in order, each with name, type and
direction), properties (type, access and the EmitsChangedSignal annotation,
"true" when absent) and signals (arguments in order, name and type). Every
interface of the contract must appear in some LIVE file unless named with
--unchecked (an object of it could not be made). The standard
org.freedesktop.DBus.* interfaces, child nodes and other annotations are
ignored.

Prints one line per difference and exits 1 if there is any; 0 when all
match; 2 when a file cannot be read or is not introspection XML.
"""

import argparse
import sys
import xml.etree.ElementTree as ElementTree

STANDARD = "org.freedesktop.DBus."
EMITS = "org.freedesktop.DBus.Property.EmitsChangedSignal"


class Malformed(Exception):
    pass


def required(element, attribute, where):
    value = element.get(attribute)
    if value is None or value == "":
        raise Malformed(f"{where}: <{element.tag}> without {attribute}")
    return value


def arguments(member, where, method):
    out = []
    for child in member:
        if child.tag == "annotation":
            continue
        if child.tag != "arg":
            raise Malformed(f"{where}: unexpected <{child.tag}>")
        direction = child.get("direction", "in" if method else "out")
        if direction not in (("in", "out") if method else ("out",)):
            raise Malformed(f"{where}: argument direction {direction!r}")
        entry = (child.get("name", ""), required(child, "type", where))
        out.append(entry + (direction,) if method else entry)
    return tuple(out)


def interface_model(interface, source):
    name = required(interface, "name", source)
    model = {"method": {}, "property": {}, "signal": {}}
    for member in interface:
        if member.tag == "annotation":
            continue
        if member.tag not in model:
            raise Malformed(f"{source}: {name}: unexpected <{member.tag}>")
        member_name = required(member, "name", f"{source}: {name}")
        where = f"{source}: {name}: {member.tag} {member_name}"
        if member_name in model[member.tag]:
            raise Malformed(f"{where}: twice")
        if member.tag == "property":
            emits = "true"
            for child in member:
                if child.tag == "annotation" and child.get("name") == EMITS:
                    emits = child.get("value", "")
                elif child.tag != "annotation":
                    raise Malformed(f"{where}: unexpected <{child.tag}>")
            value = (required(member, "type", where), required(member, "access", where), emits)
        else:
            value = arguments(member, where, member.tag == "method")
        model[member.tag][member_name] = value
    return name, model


def load(path):
    """The interfaces an introspection document declares: {name: model}."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise Malformed(f"{path}: {error}") from error
    if root.tag != "node":
        raise Malformed(f"{path}: the root element is <{root.tag}>, not <node>")
    interfaces = {}
    for interface in root.findall("interface"):
        name, model = interface_model(interface, path)
        if name.startswith(STANDARD):
            continue
        if name in interfaces:
            raise Malformed(f"{path}: interface {name} twice")
        interfaces[name] = model
    return interfaces


def describe(kind, value):
    if kind == "property":
        return "type {} access {} EmitsChangedSignal {}".format(*value)
    # An argument as its type, name and direction: "s level in".
    return "(" + ", ".join(" ".join(part for part in (arg[1], arg[0]) + arg[2:] if part) for arg in value) + ")"


def compare(contract, live, source):
    differences = []
    for interface, model in sorted(live.items()):
        if interface not in contract:
            differences.append(f"{source}: interface {interface} is exported but not in the contract")
            continue
        expected = contract[interface]
        for kind in ("method", "property", "signal"):
            for name in sorted(set(expected[kind]) | set(model[kind])):
                want = expected[kind].get(name)
                got = model[kind].get(name)
                if got is None:
                    differences.append(f"{source}: {interface}: {kind} {name} is in the contract but not exported")
                elif want is None:
                    differences.append(f"{source}: {interface}: {kind} {name} is exported but not in the contract")
                elif want != got:
                    differences.append(f"{source}: {interface}: {kind} {name}: the contract says "
                                       f"{describe(kind, want)}, the daemon exports {describe(kind, got)}")
    return differences


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contract")
    parser.add_argument("live", nargs="+")
    parser.add_argument("--unchecked", action="append", default=[], metavar="INTERFACE",
                        help="an interface of the contract no LIVE file has (may be repeated)")
    options = parser.parse_args()
    try:
        contract = load(options.contract)
        if not contract:
            raise Malformed(f"{options.contract}: no interface")
        differences = []
        seen = set()
        for path in options.live:
            live = load(path)
            seen.update(live)
            differences += compare(contract, live, path)
    except Malformed as error:
        print(f"compare_introspection: {error}")
        return 2
    for interface in options.unchecked:
        if interface not in contract:
            print(f"compare_introspection: --unchecked {interface}: not an interface of the contract")
            return 2
    for interface in sorted(set(contract) - seen - set(options.unchecked)):
        differences.append(f"interface {interface} of the contract: no introspected object exports it")
    for line in differences:
        print(line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
