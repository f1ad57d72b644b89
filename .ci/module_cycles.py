"""Fails when modules of a crate import each other in a circle (issue 16: the dependency
direction inside a crate is one-way, so a newcomer can read it bottom-up).

For every `src/**/*.rs` of the crates given, the edges are the `crate::a::b` and `super::x`
paths its code names (resolved to the longest module that exists), leaving out comments, a
module's own children and ancestors and its test module (`#[cfg(test)]` or `#[cfg(all(test,
...))]` `mod tests`). Two checks: no circle between modules, and none between the crate's
top-level modules (`model` importing `io` while `io` imports `model` is an import that runs back
up, even when the two files involved differ). Usage: module_cycles.py CRATE_DIR...
"""
import os
import re
import sys


def modules(src):
    """Module path (`a::b`) -> file, for every .rs file under src."""
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                parts = os.path.relpath(path, src)[:-3].split("/")
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found["::".join(parts)] = path
    return found


def imports(mods, name, path):
    text = open(path).read()
    text = re.sub(r"#\[cfg\([^\]]*\btest\b[^\]]*\)\]\s*mod tests \{.*", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    here = name.split("::") if name else []
    out = set()
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        rest = m.group(2).strip(":").split("::")
        # `super` of a module is its parent: the folder of `a/b.rs`, or of `a/b/mod.rs`.
        candidate = rest if m.group(1) == "crate" else here[:-1] + rest
        for i in range(len(candidate), 0, -1):
            key = "::".join(candidate[:i])
            if key in mods:
                related = key == name or name.startswith(key + "::") or key.startswith(name + "::")
                if name and not related:
                    out.add(key)
                break
    return out


def cycles(graph):
    found, done, stack = set(), set(), []

    def visit(n):
        if n in stack:
            found.add(" -> ".join(stack[stack.index(n):] + [n]))
            return
        if n in done:
            return
        stack.append(n)
        for d in sorted(graph[n]):
            visit(d)
        stack.pop()
        done.add(n)

    for n in sorted(graph):
        visit(n)
    return sorted(found)


def main():
    bad = False
    for crate in sys.argv[1:]:
        mods = modules(os.path.join(crate, "src"))
        graph = {n: imports(mods, n, p) for n, p in mods.items()}
        for c in cycles(graph):
            print(f"{crate}: modules import each other in a circle: {c}")
            bad = True
        top = {n.split("::")[0]: set() for n in graph if n}
        for n, deps in graph.items():
            for d in deps:
                a, b = n.split("::")[0], d.split("::")[0]
                if n and a != b:
                    top[a].add(b)
        for c in cycles(top):
            print(f"{crate}: top-level modules import each other in a circle: {c}")
            bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
