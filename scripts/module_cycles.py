#!/usr/bin/env python3
"""Fails when the top-level modules of a crate depend on each other in a cycle.

For every crate (a directory with Cargo.toml and src/) it reads src/X.rs and src/X/**.rs,
collects the references from module X to another top-level module Y (`crate::Y`,
`use crate::{Y, ..}`, and `super::Y` where that `super` reaches the crate root) and reports
each strongly connected component of two or more modules, with one cycle through it.
lib.rs and main.rs are the roots that declare the modules, not nodes. Test-only code
(`#[cfg(test)] mod ..`, inline or a file) is left out: it is compiled into no build, so a
test of `yuv` that runs the decoder is no dependency of `yuv` on `decode`.

A cycle listed in KNOWN is reported but does not fail, until the component changes; list
one only with the reason it cannot be cut yet.

Usage: scripts/module_cycles.py [ROOT]   (default: the repository root). Stdlib only.
"""

import os
import re
import sys

ROOTS = {"lib.rs", "main.rs"}
SKIP_DIRS = {"target", ".git", "node_modules"}
CFG_TEST_MOD = r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*"

# (crate, modules of the component): cycles owned by work in progress elsewhere.
KNOWN: set = set()


def strip_comments_and_strings(src):
    """Blanks out comments, string and char literals (a `crate::` in a doc is no edge)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                depth += src.startswith("/*", i) - src.startswith("*/", i)
                i += 2 if src.startswith(("/*", "*/"), i) else 1
        elif c == "r" and re.match(r'r#*"', src[i:]) and not (i and (src[i - 1].isalnum() or src[i - 1] == "_") and src[i - 1] not in "bc"):
            hashes = re.match(r"r(#*)", src[i:]).group(1)
            end = src.find('"' + hashes, i + len(hashes) + 2)
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^'\\])'", src[i : i + 12]):
            i += re.match(r"'(?:\\.[^']*|[^'\\])'", src[i : i + 12]).end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def group_heads(body):
    """Top-level path heads of a use group body: `a, b::c, d::{e}` -> a, b, d."""
    heads, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            heads.append(cur)
            cur = ""
            continue
        if depth == 0:
            cur += ch
    heads.append(cur)
    out = []
    for h in heads:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", h)
        if m:
            out.append(m.group(1))
    return out


def balanced(src, start):
    """The text inside the braces that open at src[start]."""
    depth = 0
    for i in range(start, len(src)):
        if src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
            if depth == 0:
                return src[start + 1 : i]
    return src[start + 1 :]


def inline_mod_depth(src):
    """For each offset, how many inline `mod x { .. }` blocks enclose it (as a lookup fn)."""
    events = []  # (offset, +1/-1)
    for m in re.finditer(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", src):
        start = m.end() - 1
        body = balanced(src, start)
        events.append((start, 1))
        events.append((start + len(body) + 1, -1))
    events.sort()

    def depth_at(pos):
        return sum(d for off, d in events if off <= pos)

    return depth_at


def without_test_mods(src):
    """The source with every inline `#[cfg(test)] mod x { .. }` body blanked."""
    while True:
        m = re.search(CFG_TEST_MOD + r"\{", src)
        if not m:
            return src
        body = balanced(src, m.end() - 1)
        src = src[: m.start()] + " " + src[m.end() + len(body) + 1 :]


def test_only_files(src_dir):
    """Modules the crate roots declare as `#[cfg(test)] mod x;` (whole test-only files)."""
    names = set()
    for root in ROOTS:
        path = os.path.join(src_dir, root)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                names.update(re.findall(CFG_TEST_MOD + ";", strip_comments_and_strings(f.read())))
    return names


def references(src, file_depth):
    """Top-level module names the source refers to. `file_depth` is 1 for src/X.rs, 2 for
    src/X/y.rs and so on (the number of `super`s that reach the crate root from file scope)."""
    src = without_test_mods(strip_comments_and_strings(src))
    refs = set()
    for m in re.finditer(r"\bcrate::\s*\{", src):
        refs.update(group_heads(balanced(src, m.end() - 1)))
    for m in re.finditer(r"\bcrate::\s*([A-Za-z_][A-Za-z0-9_]*)", src):
        refs.add(m.group(1))
    depth_at = inline_mod_depth(src)
    for m in re.finditer(r"\b((?:super::\s*)+)(\{|[A-Za-z_][A-Za-z0-9_]*)", src):
        ups = m.group(1).count("super")
        if ups != file_depth + depth_at(m.start()):
            continue
        if m.group(2) == "{":
            refs.update(group_heads(balanced(src, m.end() - 1)))
        else:
            refs.add(m.group(2))
    return refs


def crate_graph(src_dir):
    """{module: set(modules it uses)} over the top-level modules of one crate."""
    files = {}  # module -> [(path, depth)]
    test_only = test_only_files(src_dir)
    for entry in sorted(os.listdir(src_dir)):
        if entry.removesuffix(".rs") in test_only:
            continue
        path = os.path.join(src_dir, entry)
        if entry.endswith(".rs") and entry not in ROOTS:
            files.setdefault(entry[:-3], []).append((path, 1))
        elif os.path.isdir(path) and entry not in ("bin",):
            for dirpath, _, names in os.walk(path):
                rel = os.path.relpath(dirpath, src_dir).split(os.sep)
                for n in names:
                    if n.endswith(".rs"):
                        depth = len(rel) + (0 if n == "mod.rs" else 1)
                        files.setdefault(entry, []).append((os.path.join(dirpath, n), depth))
    graph = {}
    for module, paths in files.items():
        refs = set()
        for path, depth in paths:
            with open(path, encoding="utf-8") as f:
                refs |= references(f.read(), depth)
        graph[module] = {r for r in refs if r in files and r != module}
    return graph


def cycles(graph):
    """Strongly connected components of two or more modules (Tarjan), each as one cycle."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [one_cycle(graph, comp) for comp in comps]


def one_cycle(graph, comp):
    """A shortest cycle through the component's first module (breadth-first)."""
    start, members = comp[0], set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return comp, list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp, comp


def crates(root):
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if "Cargo.toml" in names and os.path.isdir(os.path.join(dirpath, "src")):
            yield os.path.relpath(dirpath, root), os.path.join(dirpath, "src")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = 0
    for name, src in crates(root):
        for comp, cycle in cycles(crate_graph(src)):
            known = (name, frozenset(comp)) in KNOWN
            found += 0 if known else 1
            tag = "known module cycle (allowed in KNOWN)" if known else "module cycle"
            print(f"{name}: {tag} {' -> '.join(cycle)} (component: {', '.join(comp)})")
    if found:
        print(f"{found} module cycle(s): make the dependency one way (move the shared item down)", file=sys.stderr)
        return 1
    print("no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
