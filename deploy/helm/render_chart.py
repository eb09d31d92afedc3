#!/usr/bin/env python3
"""`helm template` for deploy/helm/strata on machines without helm (Debian does not package it).

Renders the subset of Helm's template language the chart uses: actions with {{- -}} trimming,
comments, define / include, if / else, range over a list with one variable, $variables,
pipelines with parentheses, and the functions toYaml, nindent, indent, quote, default, required,
b64enc, trunc, trimSuffix, until, int, printf, not, and, or, eq, ne. Anything else is an error,
so a template that uses more fails loudly here instead of rendering wrong.

  python3 deploy/helm/render_chart.py deploy/helm/strata --set tiers.hostPool=128GiB > out.yaml

render_chart(chart_dir, overrides={"a.b": v}, release, namespace) -> {template name: text}
(tests/packaging/check_k8s.py renders the chart with it, and with helm where installed).
"""
import base64
import copy
import json
import pathlib
import re

import yaml

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


class TemplateError(Exception):
    pass


def _tokenize(src):
    """[('text', s) | ('action', body)] with the whitespace trimming applied."""
    out = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(["text", text])
        out.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    out.append(["text", src[pos:]])
    for i, tok in enumerate(out):
        if tok[0] == "action" and tok[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip(" \t\r\n")
    return [(t[0], t[1]) for t in out]


def _parse(tokens, i=0, stop=("end",)):
    """Nodes until a keyword in `stop`; returns (nodes, index of the stop token, its body)."""
    nodes = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            if body:
                nodes.append(("text", body))
            i += 1
            continue
        if body.startswith("/*"):
            i += 1
            continue
        word = body.split(None, 1)[0] if body else ""
        if word in stop:
            return nodes, i, body
        if word == "if":
            then, j, end_body = _parse(tokens, i + 1, ("else", "end"))
            other = []
            if end_body == "else":
                other, j, _ = _parse(tokens, j + 1, ("end",))
            nodes.append(("if", body[2:].strip(), then, other))
            i = j + 1
        elif word == "range":
            inner, j, _ = _parse(tokens, i + 1, ("end",))
            nodes.append(("range", body[5:].strip(), inner))
            i = j + 1
        elif word == "define":
            inner, j, _ = _parse(tokens, i + 1, ("end",))
            nodes.append(("define", json.loads(body[6:].strip()), inner))
            i = j + 1
        elif word in ("else", "end", "with", "template", "block"):
            raise TemplateError("unsupported or misplaced '%s'" % body)
        else:
            nodes.append(("action", body))
            i += 1
    if stop != ("EOF",):
        raise TemplateError("missing {{ end }}")
    return nodes, i, None


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _truthy(v):
    return bool(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v != 0


def _split_top(s, sep):
    parts, depth, quote, cur = [], 0, False, ""
    for ch in s:
        if ch == '"' and not cur.endswith("\\"):
            quote = not quote
        if not quote:
            depth += ch == "("
            depth -= ch == ")"
            if ch == sep and depth == 0:
                parts.append(cur)
                cur = ""
                continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def _words(s):
    words, i = [], 0
    while i < len(s):
        if s[i].isspace():
            i += 1
        elif s[i] == '"':
            j = i + 1
            while s[j] != '"' or s[j - 1] == "\\":
                j += 1
            words.append(s[i:j + 1])
            i = j + 1
        elif s[i] == "(":
            depth, j = 0, i
            while True:
                depth += s[j] == "("
                depth -= s[j] == ")"
                if depth == 0:
                    break
                j += 1
            words.append(s[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < len(s) and not s[j].isspace():
                j += 1
            words.append(s[i:j])
            i = j
    return words


class _Renderer:
    def __init__(self, root):
        self.root = root
        self.defines = {}

    def funcs(self, name, args):
        f = {
            "include": lambda n, d: self.render_nodes(self.defines[n], d, {}),
            "toYaml": lambda v: "{}" if v == {} else yaml.safe_dump(
                v, default_flow_style=False, sort_keys=True).rstrip("\n"),
            "nindent": lambda n, s: "\n" + "\n".join(" " * n + l for l in _fmt(s).split("\n")),
            "indent": lambda n, s: "\n".join(" " * n + l for l in _fmt(s).split("\n")),
            "quote": lambda v: json.dumps(_fmt(v)),
            "default": lambda d, v=None: v if _truthy(v) else d,
            "b64enc": lambda v: base64.b64encode(_fmt(v).encode()).decode(),
            "trunc": lambda n, s: _fmt(s)[:n],
            "trimSuffix": lambda suf, s: _fmt(s)[:-len(suf)] if _fmt(s).endswith(suf) else _fmt(s),
            "until": lambda n: list(range(n)),
            "int": lambda v: int(v),
            "printf": lambda f, *a: re.sub(r"%[vsd]", "%s", f) % tuple(_fmt(x) for x in a),
            "not": lambda v: not _truthy(v),
            "and": lambda *a: all(_truthy(x) for x in a),
            "or": lambda *a: any(_truthy(x) for x in a),
            "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b,
        }
        if name == "required":
            msg, v = args
            if v is None or v == "":
                raise TemplateError("required: " + msg)
            return v
        if name not in f:
            raise TemplateError("unsupported function '%s'" % name)
        if name == "include" and args[0] not in self.defines:
            raise TemplateError("include of undefined template '%s'" % args[0])
        return f[name](*args)

    def value(self, word, dot, scope):
        if word.startswith('"'):
            return json.loads(word)
        if word.startswith("("):
            return self.pipeline(word[1:-1], dot, scope)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word == ".":
            return dot
        if word.startswith("$"):
            name, _, path = word.partition(".")
            if name == "$":
                base = self.root
            elif name in scope:
                base = scope[name]
            else:
                raise TemplateError("undefined variable " + name)
            return self.walk(base, path)
        if word.startswith("."):
            return self.walk(dot, word[1:])
        return None

    @staticmethod
    def walk(base, path):
        for part in filter(None, path.split(".")):
            base = base.get(part) if isinstance(base, dict) else None
        return base

    def command(self, cmd, dot, scope, piped):
        words = _words(cmd)
        head = words[0]
        if re.fullmatch(r"[A-Za-z]\w*", head) and head not in ("true", "false"):
            args = [self.value(w, dot, scope) for w in words[1:]] + piped
            return self.funcs(head, args)
        if len(words) != 1 or piped:
            raise TemplateError("cannot apply '%s'" % cmd)
        return self.value(head, dot, scope)

    def pipeline(self, expr, dot, scope):
        m = re.match(r"(\$\w+)\s*:=\s*(.*)", expr, re.S)
        if m:
            scope[m.group(1)] = self.pipeline(m.group(2), dot, scope)
            return ""
        v, piped = None, []
        for cmd in _split_top(expr, "|"):
            v = self.command(cmd, dot, scope, piped)
            piped = [v]
        return v

    def render_nodes(self, nodes, dot, scope):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "define":
                self.defines[node[1]] = node[2]
            elif node[0] == "action":
                out.append(_fmt(self.pipeline(node[1], dot, scope)))
            elif node[0] == "if":
                branch = node[2] if _truthy(self.pipeline(node[1], dot, scope)) else node[3]
                out.append(self.render_nodes(branch, dot, dict(scope)))
            elif node[0] == "range":
                m = re.match(r"(?:(\$\w+)\s*:=\s*)?(.*)", node[1], re.S)
                for item in self.pipeline(m.group(2), dot, scope) or []:
                    inner = dict(scope)
                    if m.group(1):
                        inner[m.group(1)] = item
                    out.append(self.render_nodes(node[2], item, inner))
        return "".join(out)


def _merge(base, overrides):
    for key, v in overrides.items():
        cur = base
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return base


def render_chart(chart_dir, overrides=None, release="strata", namespace="strata"):
    chart_dir = pathlib.Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = _merge(copy.deepcopy(yaml.safe_load((chart_dir / "values.yaml").read_text())),
                    overrides or {})
    root = {"Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"],
                      "AppVersion": chart.get("appVersion", "")}}
    r = _Renderer(root)
    files = sorted((chart_dir / "templates").iterdir())
    parsed = {f.name: _parse(_tokenize(f.read_text()), 0, ("EOF",))[0] for f in files}
    for name, nodes in parsed.items():  # every define first, as helm does
        for node in nodes:
            if node[0] == "define":
                r.defines[node[1]] = node[2]
    return {name: r.render_nodes(nodes, root, {}) for name, nodes in parsed.items()
            if not name.startswith("_")}


def main(argv):
    """render_chart.py CHART [--set key.path=value ...] [--namespace NS] [--release NAME]
    [--only TEMPLATE]: prints the rendered manifests as `helm template` would. --set values are
    YAML scalars (true, 3, "x")."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("chart")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--namespace", default="strata")
    p.add_argument("--release", default="strata")
    p.add_argument("--only", help="print only this template (e.g. servicemonitor.yaml)")
    a = p.parse_args(argv)
    overrides = {}
    for kv in a.set:
        key, _, v = kv.partition("=")
        overrides[key] = yaml.safe_load(v) if v != "" else ""
    out = render_chart(a.chart, overrides, a.release, a.namespace)
    for name, text in out.items():
        if name.endswith(".yaml") and text.strip() and a.only in (None, name):
            print("---\n# Source: strata/templates/%s\n%s" % (name, text.strip("\n")))


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
