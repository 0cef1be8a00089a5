"""`fly secrets import`'s parser, rule for rule as flyctl's
internal/command/secrets/parser.go `parseSecrets` (the newest stored version, the one with
the `#` rule and single quotes; import.go wraps its error as "Failed to parse secrets from
stdin: ..." and refuses an empty result with "requires at least one SECRET=VALUE pair").

The rules, which are not a shell's or a dotenv library's:
- Input is read line by line as Go's bufio.Scanner does: split at "\\n", one trailing "\\r"
  dropped. A line longer than the Scanner's 64 KiB token limit ends the input there,
  silently (parseSecrets never looks at scanner.Err()): what came before is kept.
- Outside a block, a line that starts with "#" (no leading blanks) or is blank (Go's
  unicode whitespace) is skipped. Any other line without "=" is an error.
- Key = text before the first "=", whitespace-trimmed both sides. Value = the rest with
  leading spaces (spaces only, not tabs) removed; trailing spaces stay.
- If the value holds a "#" and the text before the first "#" has an even number of `"`,
  the value is cut there and trailing spaces removed: `a"#b` and `"x#y"` keep their "#",
  `x #y`, `"x" #y` and `""#y` are cut.
- Then: a value that starts and ends with `\"\"\"` and is at least 6 long loses them; one that
  starts with `\"\"\"` otherwise opens a block: its rest plus "\\n", then every following line
  plus "\\n", until a line that ends with `\"\"\"` (checked on the raw line, so trailing blanks
  keep the block open), whose text before the `\"\"\"` ends the value. A block still open at
  the end of input sets nothing. A value that starts and ends with `"` (or with `'`) loses
  one character at each end; a value that is a single `"` or `'` makes flyctl panic
  (Go slice [1:0]). Nothing else is unquoted or unescaped: backslashes, `$`, inner quotes
  and non-ASCII text are kept as they are. A later line for the same key wins.
"""
from __future__ import annotations

SCANNER_MAX = 64 * 1024  # bufio.MaxScanTokenSize
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
           "\u2028\u2029\u202f\u205f\u3000"  # unicode.IsSpace


class ParseError(Exception):
    pass


class GoPanic(Exception):
    """flyctl would crash here (a Go runtime panic)."""


def _lines(text: str):
    data = text.encode()
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        stop = len(data) if end < 0 else end
        # A token must fit the Scanner's buffer; with its newline it may use all of it.
        if stop - start + (0 if end < 0 else 1) > SCANNER_MAX:
            return
        line = data[start:stop]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield line.decode(errors="surrogateescape")
        if end < 0:
            return
        start = end + 1


def _strip_pair(value: str, quote: str) -> str:
    if len(value) == 1:
        raise GoPanic("panic: runtime error: slice bounds out of range [1:0]")
    return value[1:-1]


def parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    block_key: str | None = None
    block: list[str] = []
    for line in _lines(text):
        if block_key is not None:
            if line.endswith('"""'):
                block.append(line[:-3])
                out[block_key] = "".join(block)
                block_key, block = None, []
            else:
                block.append(line + "\n")
            continue
        if line.startswith("#") or line.strip(GO_SPACE) == "":
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ParseError(f"Secrets must be provided as NAME=VALUE pairs ({line} is invalid)")
        key = key.strip(GO_SPACE)
        value = value.lstrip(" ")
        before, hash_, _ = value.partition("#")
        if hash_ and before.count('"') % 2 == 0:
            value = before.rstrip(" ")
        if value.startswith('"""') and value.endswith('"""') and len(value) >= 6:
            out[key] = value[3:-3]
        elif value.startswith('"""'):
            block_key, block = key, [value[3:] + "\n"]
        elif value.startswith('"') and value.endswith('"'):
            out[key] = _strip_pair(value, '"')
        elif value.startswith("'") and value.endswith("'"):
            out[key] = _strip_pair(value, "'")
        else:
            out[key] = value
    return out
