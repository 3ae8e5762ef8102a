#!/usr/bin/env python3
"""Offline validation of the chart's custom resources against their CRDs' own schemas.

  crd_schema.py vendor CRD.yaml OUT.json   store the served version's openAPIV3Schema
  crd_schema.py check SCHEMA_DIR RENDERED  validate every custom resource in RENDERED
  crd_schema.py builtin RENDERED OUT       write RENDERED's built-in kinds to OUT (for
                                           kubernetes-validate, which knows no CRDs)

Schemas are made strict as `kubectl apply --validate=strict` is: an unknown field is an
error (objects without x-kubernetes-preserve-unknown-fields get additionalProperties: false).
"""
import json
import sys

import jsonschema
import yaml


def strict(node):
    if isinstance(node, dict):
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        # Go's regexp takes a flag group mid-pattern ("^(?i)..."); Python's wants it first.
        if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
            node["pattern"] = "(?i)^" + node["pattern"][5:]
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def vendor(crd_path, out_path):
    crd = yaml.safe_load(open(crd_path))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = version["schema"]["openAPIV3Schema"]
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {"type": "object"}
    json.dump(strict(schema), open(out_path, "w"), separators=(",", ":"), sort_keys=True)


def is_builtin(doc):
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    return "." not in group or group.endswith(".k8s.io")


def builtin(rendered, out):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d and is_builtin(d)]
    yaml.safe_dump_all(docs, open(out, "w"))


def check(schema_dir, rendered):
    import glob
    import os

    schemas = {}
    for path in glob.glob(os.path.join(schema_dir, "*.json")):
        s = json.load(open(path))
        schemas[(s["properties"]["apiVersion"]["const"], s["properties"]["kind"]["const"])] = s
    checked = 0
    for doc in yaml.safe_load_all(open(rendered)):
        if not doc:
            continue
        key = (doc["apiVersion"], doc["kind"])
        if is_builtin(doc):
            continue
        if key not in schemas:
            sys.exit(f"no schema for custom resource {key}: vendor its CRD")
        try:
            jsonschema.validate(doc, schemas[key])
        except jsonschema.ValidationError as e:
            sys.exit(f"{doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.absolute_path)}")
        checked += 1
    print(checked)


if __name__ == "__main__":
    {"vendor": vendor, "check": check, "builtin": builtin}[sys.argv[1]](*sys.argv[2:])
