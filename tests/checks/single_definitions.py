#!/usr/bin/env python3
"""Fails when a small shared codec is written a second time outside its one home in common/.

Each codec below has one home (its files) and two kinds of patterns over every C/C++ file of the
tree (build*/ and .git left out):
  - names: a function *definition* whose name says it is the codec (parse_lsn, check_host_port,
    conninfo_quote, days_from_civil, ...); calls and declarations ending in ';' do not count;
  - shapes: a line that only a copy of the codec writes (a host:port split at rfind(':'), a
    conninfo glued from "password=" + ..., the calendar's era constants). Test fixtures may glue
    conninfo strings of known values, so that one shape is not looked for under tests/.
Usage: single_definitions.py SOURCE_DIR. Prints every finding as file:line and exits 1 if any.
"""
import os
import re
import sys

# A function definition's first line: return type tokens, an optional Class:: qualifier, the name,
# '('. Lines ending in ';' (declarations, calls) and statements starting with a keyword are no
# definitions.
DEFINITION = (r"^\s*(?:[A-Za-z_][\w:<>,]*[\s*&]+)+(?:[A-Za-z_]\w*::)*(?P<name>{names})\s*\(")
NOT_A_DEFINITION = re.compile(r"^\s*(return|else|case|throw|co_return|delete|new|using)\b")

# The file of the codecs' table tests uses the codecs' constants on purpose.
CODEC_TESTS = "tests/unit/codecs_test.cpp"

CODECS = [
    {
        "codec": "PostgreSQL LSN text (parse_lsn, format_lsn)",
        "use": "common/pgclient/lsn.h",
        "home": {"common/pgclient/lsn.h", "common/pgclient/lsn.cpp"},
        "names": r"(?:parse|format)_\w*lsn\w*|\w*lsn_(?:from|to)_\w+",
        "shapes": [(r"strtoull\([^;]*,\s*16\)", True)],
    },
    {
        "codec": "host:port (parse_host_port, split_host_port)",
        "use": "common/core/host_port.h",
        # ConfigSection::check_host_port is the config adapter: it calls parse_host_port.
        "home": {"common/core/host_port.h", "common/core/host_port.cpp",
                 "common/config/yaml_reader.h", "common/config/yaml_reader.cpp"},
        "names": r"\w*host_?port\w*",
        "shapes": [(r"rfind\(\s*':'\s*\)", True)],
    },
    {
        "codec": "libpq conninfo quoting (quote_conninfo_value, build_conninfo)",
        "use": "common/pgclient/conninfo.h",
        "home": {"common/pgclient/conninfo.h", "common/pgclient/conninfo.cpp"},
        "names": r"\w*conninfo_(?:quote|value|escape)\w*|\w*(?:quote|escape)_conninfo\w*",
        # A conninfo glued by hand: "... password=" + value, unquoted or quoted by a local helper.
        "shapes": [(r"\b(?:host|hostaddr|port|dbname|user|password)=\s*\"\s*\+", False)],
    },
    {
        "codec": "calendar math (days_from_civil, civil_from_days, days_in_month, is_leap_year)",
        "use": "common/core/calendar.h",
        "home": {"common/core/calendar.h", "common/core/calendar.cpp"},
        "names": r"\w*days_from_civil\w*|\w*civil_from_days\w*|days_in_month|is_leap\w*",
        # Hinnant's era constants and the leap-year rule written out.
        "shapes": [(r"\b719468\b", True), (r"\b146097\b", True), (r"%\s*400\s*==\s*0", True)],
    },
]

EXTENSIONS = (".cpp", ".cc", ".h", ".hpp")


def source_files(root):
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("build") and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(EXTENSIONS):
                path = os.path.join(directory, name)
                yield os.path.relpath(path, root)


def main():
    if len(sys.argv) != 2:
        print("usage: single_definitions.py SOURCE_DIR", file=sys.stderr)
        return 2
    root = sys.argv[1]
    rules = []
    for codec in CODECS:
        definition = re.compile(DEFINITION.format(names=codec["names"]))
        shapes = [(re.compile(s), in_tests) for s, in_tests in codec["shapes"]]
        rules.append((codec, definition, shapes))

    findings = []
    scanned = 0
    for path in source_files(root):
        scanned += 1
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for codec, definition, shapes in rules:
            if path in codec["home"]:
                continue
            for number, line in enumerate(lines, 1):
                code = line.split("//", 1)[0]
                if not code.strip():
                    continue
                match = definition.search(code)
                if (match and not code.rstrip().endswith(";")
                        and not NOT_A_DEFINITION.search(code)):
                    findings.append(f"{path}:{number}: a second definition of {codec['codec']}: "
                                    f"{match.group('name')}(); use the one in "
                                    f"{codec['use']}")
                    continue
                if path == CODEC_TESTS:
                    continue
                for shape, in_tests in shapes:
                    if not in_tests and path.startswith("tests/"):
                        continue
                    if shape.search(code):
                        findings.append(f"{path}:{number}: a copy of {codec['codec']} "
                                        f"(/{shape.pattern}/); use the one in "
                                        f"{codec['use']}")
                        break

    if scanned == 0:
        print(f"no C/C++ files under {root}: wrong SOURCE_DIR?", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} finding(s) in {scanned} files: each codec lives once in common/")
        return 1
    print(f"ok: {len(CODECS)} codecs, each defined once ({scanned} files read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
