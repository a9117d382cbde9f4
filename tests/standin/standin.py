"""A small Kubernetes API stand-in for end-to-end tests of the infergate operator.

No kube-apiserver can be installed here, so this serves the part of the API that the operator (kube-rs 5) and
`kubectl` use, over plain HTTP on 127.0.0.1:

- discovery (`/api`, `/apis`, group versions, `/version`, a minimal `/openapi/v2` and `/openapi/v3`);
- get / list / watch (resourceVersion, bookmarks, label and field selectors, metadata-only responses for
  `Accept: ...;as=PartialObjectMetadata[List]`), create, replace (with
  resourceVersion conflicts), delete (finalizers, owner-reference garbage collection);
- patches: JSON merge, strategic merge (treated as merge: enough for `kubectl annotate/label/apply` on the kinds
  used here), JSON patch (RFC 6902), and server-side apply: a field the same manager applied before and now omits is
  removed unless another manager applied it too; lists the CRD schemas declare `x-kubernetes-list-type: map` (read
  from `<operator> crds`) merge by item key and are owned per item; `metadata.managedFields` lists one Apply entry
  per manager (writes that are not applies add none);
- a separate `/status` subresource for the infergate CRDs: writes to the main resource keep status, writes to
  `/status` change only status; `metadata.generation` moves when the spec changes;
- admission: every infergate custom resource written through the main resource is checked by
  `infergate-operator validate --stdin-jsonl` (one long-lived child process); a rejected object gets the
  422 Invalid Status that `kubectl` prints.

Not a general API server: no RBAC, no admission webhooks, no field-manager conflicts, no strategic-merge list
semantics, no list-maps outside the infergate CRDs (built-in kinds' lists merge atomically).

Cost matters (tests/bench/operator_scale.py drives ~40,000 requests through it): stored objects are never changed in
place, so writes copy only the levels they touch and watch events are encoded once and shared by every watcher;
orjson, libyaml and uvloop are used when installed (all but libyaml are in tests/requirements.txt).

Run: `python tests/standin/standin.py --port 0 --kubeconfig /tmp/kc --operator target/debug/infergate-operator`.
It prints `READY <port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import datetime as dt
import json
import itertools
import os
import sys
import time
import uuid

from aiohttp import web

try:
    import yaml
    # libyaml when present: the pure-Python loader costs ~10 ms per object.
    _YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
except ImportError:  # pragma: no cover - pyyaml is in tests/requirements.txt
    yaml = None

# orjson (tests/requirements.txt) makes encoding, decoding and copying objects several times cheaper; the stand-in
# is single-threaded and the operator scale bench is bound by its CPU. The stdlib is the fallback.
try:
    import orjson

    def dumps(obj) -> bytes:
        """Compact JSON bytes."""
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    loads = orjson.loads

    def clone(obj):
        """Deep copy of JSON data (a round trip through orjson beats copy.deepcopy by ~10x)."""
        if not isinstance(obj, (dict, list)):
            return obj
        return orjson.loads(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))
except ImportError:  # pragma: no cover
    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()

    loads = json.loads
    clone = copy.deepcopy


class Kind:
    def __init__(self, group, version, plural, kind, namespaced, status=False, validate=False, short=()):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.status, self.validate, self.short = namespaced, status, validate, list(short)

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self):
        return (self.group, self.version, self.plural)

    def resource(self):
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        out = {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
               "kind": self.kind, "verbs": verbs}
        if self.short:
            out["shortNames"] = self.short
        if self.group == "infergate.dev":
            out["categories"] = ["infergate"]
        return out


KINDS = [
    Kind("", "v1", "namespaces", "Namespace", False, status=True, short=["ns"]),
    Kind("", "v1", "secrets", "Secret", True),
    Kind("", "v1", "configmaps", "ConfigMap", True, short=["cm"]),
    Kind("", "v1", "events", "Event", True, short=["ev"]),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True, short=["sa"]),
    Kind("", "v1", "nodes", "Node", False, status=True, short=["no"]),
    Kind("", "v1", "services", "Service", True, status=True, short=["svc"]),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", True),
    Kind("events.k8s.io", "v1", "events", "Event", True, short=["ev"]),
    Kind("infergate.dev", "v1alpha1", "ratetiers", "RateTier", False, status=True, validate=True, short=["igtier"]),
    Kind("infergate.dev", "v1alpha1", "inferenceendpoints", "InferenceEndpoint", True, status=True, validate=True,
         short=["igep"]),
    Kind("infergate.dev", "v1alpha1", "apikeypolicies", "ApiKeyPolicy", True, status=True, validate=True,
         short=["igkey"]),
]
SECRETS = ("", "v1", "secrets")
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
GROUPS: dict[str, list[Kind]] = {}
for _k in KINDS:
    GROUPS.setdefault(_k.group, []).append(_k)


_clock = [0, ""]


def now_rfc3339() -> str:
    """Whole seconds, as the API serialises timestamps; formatted once per second (strftime per write showed up in
    the scale bench's profile)."""
    t = int(time.time())
    if t != _clock[0]:
        _clock[0], _clock[1] = t, dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _clock[1]


# Object uids: a random version-4 UUID per stand-in run with a counter in its last group, unique within the run
# (all a uid has to be here) and far cheaper than uuid.uuid4() per create.
_UID_PREFIX = str(uuid.uuid4())[:24]
_uid_counter = itertools.count(1)


def new_uid() -> str:
    return f"{_UID_PREFIX}{next(_uid_counter):012x}"


def status_obj(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.body = status_obj(code, reason, message, details)
        self.code = code


def not_found(kind: Kind, name: str) -> ApiError:
    what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return ApiError(404, "NotFound", f'{what} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


# --- selectors -------------------------------------------------------------------------------------------------

def parse_label_selector(sel: str | None):
    """Equality, inequality, existence and set-based requirements; returns a predicate over a labels dict."""
    if not sel:
        return lambda labels: True
    reqs = []
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in (p.strip() for p in parts if p.strip()):
        if " notin " in part or " in " in part:
            neg = " notin " in part
            key, _, vals = part.partition(" notin " if neg else " in ")
            values = {v.strip() for v in vals.strip().strip("()").split(",")}
            reqs.append(lambda l, k=key.strip(), vs=values, n=neg: (l.get(k) in vs) != n)
        elif "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append(lambda l, k=k.strip(), v=v.strip(): l.get(k) != v)
        elif "==" in part or "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            reqs.append(lambda l, k=k.strip(), v=v.strip(): l.get(k) == v)
        elif part.startswith("!"):
            reqs.append(lambda l, k=part[1:].strip(): k not in l)
        else:
            reqs.append(lambda l, k=part: k in l)
    return lambda labels: all(r(labels or {}) for r in reqs)


def parse_field_selector(sel: str | None):
    if not sel:
        return lambda obj: True
    reqs = []
    for part in sel.split(","):
        neg = "!=" in part
        k, v = part.split("!=" if neg else "=", 1)
        k, v = k.strip(), v.strip().lstrip("=")

        def get(obj, path=k):
            cur = obj
            for seg in path.split("."):
                cur = (cur or {}).get(seg) if isinstance(cur, dict) else None
            return "" if cur is None else str(cur)

        reqs.append(lambda o, get=get, v=v, neg=neg: (get(o) == v) != neg)
    return lambda obj: all(r(obj) for r in reqs)


# --- patches ---------------------------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return clone(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str):
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc, ops):
    """RFC 6902 (add, remove, replace, test, move, copy)."""
    doc = clone(doc)

    def parent(path):
        segs = _pointer(path)
        cur = doc
        for s in segs[:-1]:
            cur = cur[int(s)] if isinstance(cur, list) else cur[s]
        return cur, segs[-1]

    def get(path):
        cur = doc
        for s in _pointer(path):
            cur = cur[int(s)] if isinstance(cur, list) else cur[s]
        return cur

    for op in ops:
        kind, path = op["op"], op["path"]
        try:
            if kind == "test":
                if get(path) != op.get("value"):
                    raise ApiError(422, "Invalid", f"the test operation on {path} failed: value differs")
                continue
            if kind in ("move", "copy"):
                value = clone(get(op["from"]))
                if kind == "move":
                    p, k = parent(op["from"])
                    if isinstance(p, list):
                        p.pop(int(k))
                    else:
                        del p[k]
                kind, op = "add", {"op": "add", "path": path, "value": value}
            p, k = parent(path)
            if kind == "add":
                if isinstance(p, list):
                    p.insert(len(p) if k == "-" else int(k), op["value"])
                else:
                    p[k] = op["value"]
            elif kind == "remove":
                if isinstance(p, list):
                    p.pop(int(k))
                else:
                    del p[k]
            elif kind == "replace":
                if isinstance(p, list):
                    p[int(k)] = op["value"]
                else:
                    if k not in p:
                        raise KeyError(k)
                    p[k] = op["value"]
            else:
                raise ApiError(400, "BadRequest", f"unsupported JSON patch op {kind}")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if isinstance(e, ApiError):
                raise
            raise ApiError(422, "Invalid", f"JSON patch {kind} {path}: path not found") from None
    return doc


class Shape:
    """Where a CRD schema declares `x-kubernetes-list-type: map`, as a tree over an object's fields: `fields` by
    name, `values` for a map's values (additionalProperties), `items` for a list's items, and `keys` (the
    list-map keys) when the list at this place is a list-map. Only the branches that lead to a list-map exist, so
    objects of kinds without one (and every other branch) cost nothing extra."""

    __slots__ = ("fields", "values", "items", "keys")

    def __init__(self, fields, values, items, keys):
        self.fields, self.values, self.items, self.keys = fields, values, items, keys

    def child(self, name):
        return self.fields.get(name) or self.values

    @staticmethod
    def of(schema):
        """The shape of an openAPIV3Schema, or None when nothing below it is a list-map."""
        if not isinstance(schema, dict):
            return None
        fields = {n: sh for n, sub in (schema.get("properties") or {}).items() if (sh := Shape.of(sub))}
        values, items = Shape.of(schema.get("additionalProperties")), Shape.of(schema.get("items"))
        keys = None
        if schema.get("x-kubernetes-list-type") == "map":
            keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
        if not (fields or values or items or keys is not None):
            return None
        return Shape(fields, values, items, keys)


def _child_shape(shape, name):
    return shape.child(name) if shape is not None else None


def _is_list_map(shape) -> bool:
    return shape is not None and shape.keys is not None


class ItemKey(tuple):
    """A list-map item in a field path: its key fields and their values, e.g. `(("keyId", "kid_..."),)`. A tuple, so
    it never equals a field name."""

    __slots__ = ()


def _key_value(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else dumps(v).decode()


def item_key(shape, item) -> ItemKey:
    item = item if isinstance(item, dict) else {}
    return ItemKey((k, _key_value(item.get(k))) for k in shape.keys)


def _matches(item, key: ItemKey) -> bool:
    return isinstance(item, dict) and all(_key_value(item.get(k)) == v for k, v in key)


def leaf_paths(obj, shape=None, prefix=()):
    """Paths of the leaves of an applied configuration. Lists are atomic leaves, except where `shape` says the list
    is a list-map: then each item is a path of its own (ending in its ItemKey), and so is each field inside it, so
    that ownership is per item as with a real server."""
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from leaf_paths(v, _child_shape(shape, k), prefix + (k,))
    elif isinstance(obj, list) and _is_list_map(shape):
        for item in obj:
            key = item_key(shape, item)
            yield prefix + (key,)
            for k, v in (item.items() if isinstance(item, dict) else ()):
                if k not in shape.keys:
                    yield from leaf_paths(v, _child_shape(shape.items, k), prefix + (key, k))
    else:
        yield prefix


def deep_merge(target, applied, shape=None):
    """`applied` over `target`: maps merge by field, list-maps by item key (items are merged field by field, new
    items appended in the applied order), every other list is replaced whole."""
    if isinstance(applied, dict) and isinstance(target, dict):
        out = dict(target)
        for k, v in applied.items():
            out[k] = deep_merge(target.get(k), v, _child_shape(shape, k))
        return out
    if isinstance(applied, list) and isinstance(target, list) and _is_list_map(shape):
        out = list(target)
        at = {item_key(shape, item): i for i, item in enumerate(out)}
        for item in applied:
            key = item_key(shape, item)
            if key in at:
                out[at[key]] = deep_merge(out[at[key]], item, shape.items)
            else:
                at[key] = len(out)
                out.append(clone(item))
        return out
    return clone(applied)


def _find(container, seg):
    """`(index or key, value)` of path segment `seg` in `container`, or None."""
    if isinstance(seg, ItemKey):
        if isinstance(container, list):
            for i, item in enumerate(container):
                if _matches(item, seg):
                    return i, item
        return None
    if isinstance(container, dict) and seg in container:
        return seg, container[seg]
    return None


def remove_path(obj, path):
    """Removes `path` (a field, or a whole list-map item) from `obj`, copying each map and list on the way down
    first: below the top level, `obj` may share them with a stored object (see deep_merge), and stored objects are
    never changed in place."""
    cur = obj
    trail = []
    for seg in path[:-1]:
        found = _find(cur, seg)
        if found is None or not isinstance(found[1], (dict, list)):
            return
        at, child = found
        child = dict(child) if isinstance(child, dict) else list(child)
        cur[at] = child
        trail.append((cur, at))
        cur = child
    found = _find(cur, path[-1])
    if found is None:
        return
    del cur[found[0]]
    # Drop maps and lists that became empty, as a real server does for fields nobody owns any more.
    for parent, at in reversed(trail):
        if parent[at] in ({}, []):
            del parent[at]
        else:
            break


def fields_v1(config, shape=None):
    """An applied configuration as metav1 FieldsV1 (what a managedFields entry says the manager owns): `f:<field>`
    for fields, `k:<key JSON>` with `.` for list-map items; lists that are not list-maps are owned whole."""
    if isinstance(config, dict):
        return {f"f:{k}": fields_v1(v, _child_shape(shape, k)) for k, v in config.items()}
    if isinstance(config, list) and _is_list_map(shape):
        out = {}
        for item in config:
            if not isinstance(item, dict):
                continue
            key = json.dumps({k: item.get(k) for k in sorted(shape.keys)}, separators=(",", ":"))
            out[f"k:{key}"] = {".": {}, **fields_v1(item, shape.items)}
        return out
    return {}


def load_shapes(operator: str | None) -> dict[tuple, Shape]:
    """The list-map shapes of the infergate CRDs, by (group, version, plural), from `<operator> crds`: the very
    schemas the validator checks against."""
    if not operator or yaml is None:
        return {}
    import subprocess
    out = subprocess.run([operator, "crds"], check=True, capture_output=True, text=True, timeout=120).stdout
    shapes = {}
    for crd in yaml.load_all(out, Loader=_YAML_LOADER):
        if not crd:
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            shape = Shape.of(((version.get("schema") or {}).get("openAPIV3Schema")))
            if shape is not None:
                shapes[(spec["group"], version["name"], spec["names"]["plural"])] = shape
    return shapes


# --- validation ------------------------------------------------------------------------------------------------

class Validator:
    """Feeds objects to `infergate-operator validate --stdin-jsonl`, one line each, through one child process."""

    def __init__(self, binary: str | None):
        self.binary = binary
        self.proc = None
        self.lock = asyncio.Lock()

    async def start(self):
        if self.binary:
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "validate", "--stdin-jsonl",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024)

    async def check(self, obj: dict) -> list[str]:
        if self.proc is None:
            return []
        async with self.lock:
            if self.proc.returncode is not None:
                raise ApiError(500, "InternalError", "the schema validator process exited; restart the stand-in")
            self.proc.stdin.write(dumps(obj) + b"\n")
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise ApiError(500, "InternalError", "the schema validator process gave no answer")
        answer = loads(line)
        if answer.get("ok"):
            return []
        return [str(e) for e in answer.get("errors") or ["rejected by the schema"]]

    async def close(self):
        if self.proc and self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()


class Watcher:
    """One watch connection's pending events. Cheaper than an asyncio.Queue read with `wait_for` per event: a burst
    of writes wakes the connection once, and it sends the whole burst in one write."""

    __slots__ = ("loop", "pending", "waiter")

    def __init__(self, loop):
        self.loop = loop
        self.pending: list = []
        self.waiter = None

    def push(self, entry):
        self.pending.append(entry)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)

    def take(self) -> list:
        out, self.pending = self.pending, []
        return out

    async def wait(self, timeout: float) -> bool:
        """True once something is pending; False after `timeout` seconds with nothing."""
        if self.pending:
            return True
        self.waiter = self.loop.create_future()
        try:
            await asyncio.wait_for(self.waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self.waiter = None
        return bool(self.pending)


# --- the store -------------------------------------------------------------------------------------------------

class Store:
    def __init__(self, validator: Validator, shapes: dict[tuple, Shape] | None = None):
        self.rv = 1
        # Where each kind's schema declares list-maps (see Shape); kinds absent here merge every list atomically.
        self.shapes = shapes or {}
        self.objects: dict[tuple, dict[tuple, dict]] = {k.key: {} for k in KINDS}
        # Last configuration each server-side-apply manager applied, per object and subresource.
        self.applied: dict[tuple, dict[tuple, dict]] = {}
        # Every change since start (the stand-in lives for one test session): (rv, type, object, encoded line).
        self.history: dict[tuple, list] = {k.key: [] for k in KINDS}
        self.watchers: dict[tuple, set] = {k.key: set() for k in KINDS}
        self.validator = validator
        self.requests = 0
        # Lists and watches that asked for metadata only, and every Secret list or watch as
        # [verb, labelSelector, metadata only] (`/standin/stats`).
        self.metadata_requests = 0
        self.secret_reads: list[list] = []
        self.labelled: dict[str, int] = {}
        self.with_status = {k.plural: 0 for k in KINDS if k.status and k.group}

    # Every write to `objects` goes through _put/_drop, which keep the counts `/standin/stats` reports: the scale
    # bench polls them several times a second, and counting 30,000 objects each time cost a quarter of the CPU.
    def _tally(self, kind: Kind, obj: dict, sign: int):
        if kind.key == SECRETS:
            c = (obj["metadata"].get("labels") or {}).get("infergate.dev/component", "")
            self.labelled[c] = self.labelled.get(c, 0) + sign
        elif kind.status and kind.group and obj.get("status"):
            self.with_status[kind.plural] += sign

    def _put(self, kind: Kind, key: tuple, obj: dict):
        objs = self.objects[kind.key]
        old = objs.get(key)
        if old is not None:
            self._tally(kind, old, -1)
        objs[key] = obj
        self._tally(kind, obj, 1)

    def _drop(self, kind: Kind, key: tuple):
        old = self.objects[kind.key].pop(key, None)
        if old is not None:
            self._tally(kind, old, -1)

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def emit(self, kind: Kind, etype: str, obj: dict):
        rv = int(obj["metadata"]["resourceVersion"])
        line = dumps({"type": etype, "object": obj}) + b"\n"
        entry = (rv, etype, obj, line)
        self.history[kind.key].append(entry)
        for w in self.watchers[kind.key]:
            w.push(entry)

    def list(self, kind: Kind, ns: str | None):
        items = self.objects[kind.key]
        if ns is None:
            return list(items.values())
        return [o for (ons, _), o in items.items() if ons == ns]

    def get(self, kind: Kind, ns: str | None, name: str) -> dict:
        obj = self.objects[kind.key].get((ns or "", name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    async def admit(self, kind: Kind, obj: dict):
        if not kind.validate:
            return
        errors = await self.validator.check(obj)
        if errors:
            name = obj.get("metadata", {}).get("name", "")
            causes = [{"reason": "FieldValueInvalid", "message": e} for e in errors]
            raise ApiError(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: ' + "; ".join(errors),
                           {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes})

    def _spec_part(self, obj):
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}

    async def create(self, kind: Kind, ns: str | None, obj: dict, validate=True) -> dict:
        """Takes ownership of `obj` (every caller passes a freshly decoded or copied object)."""
        obj = dict(obj)
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value: name or "
                           "generateName is required")
        if kind.namespaced:
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), name)
        if key in self.objects[kind.key]:
            what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(409, "AlreadyExists", f'{what} "{name}" already exists',
                           {"name": name, "group": kind.group, "kind": kind.plural})
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status and kind.group:
            obj.pop("status", None)
        if validate:
            await self.admit(kind, obj)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        meta["resourceVersion"] = self.next_rv()
        self._put(kind, key, obj)
        self.emit(kind, "ADDED", obj)
        return obj

    async def update(self, kind: Kind, ns: str | None, name: str, new: dict, subresource: str | None,
                     check_rv: bool = True) -> dict:
        """Replaces an object (PUT semantics) honouring the status subresource; the common path for writes."""
        old = self.get(kind, ns, name)
        # Stored objects are never changed in place (watch history and other stored objects share their parts),
        # so copying the two levels written here is enough; nested values may be shared with `old`.
        new = dict(new)
        meta = new["metadata"] = dict(new.get("metadata") or {})
        if check_rv and meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the object has been '
                           "modified; please apply your changes to the latest version and try again",
                           {"name": name, "group": kind.group, "kind": kind.plural})
        if kind.status and subresource == "status":
            merged = {**old, "metadata": dict(old["metadata"])}
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            # A status apply records its manager too.
            if "managedFields" in meta:
                merged["metadata"]["managedFields"] = meta["managedFields"]
            new = merged
        elif kind.status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        # A write that does not send managedFields keeps them, as on a real server.
        if "managedFields" not in new["metadata"] and "managedFields" in old["metadata"]:
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
        # Server-owned metadata cannot be changed by clients.
        for field in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
            else:
                new["metadata"].pop(field, None)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        generation = old["metadata"].get("generation", 1)
        if self._spec_part(new) != self._spec_part(old):
            generation += 1
        new["metadata"]["generation"] = generation
        if subresource != "status":
            await self.admit(kind, new)
        strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}
        if strip(new) == strip(old):
            return old  # no-op writes do not bump resourceVersion, as on a real server
        new["metadata"]["resourceVersion"] = self.next_rv()
        # Finalizers removed from an object being deleted: it goes now.
        if old["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            new["metadata"]["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
            self._put(kind, (new["metadata"].get("namespace", ""), name), new)
            return self._remove(kind, new)
        self._put(kind, (new["metadata"].get("namespace", ""), name), new)
        self.emit(kind, "MODIFIED", new)
        return new

    def _remove(self, kind: Kind, obj: dict) -> dict:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        self._drop(kind, key)
        self.applied.pop((kind.key,) + key, None)
        gone = {**obj, "metadata": dict(meta)}
        gone["metadata"]["resourceVersion"] = self.next_rv()
        self.emit(kind, "DELETED", gone)
        self._collect_garbage(meta.get("uid"))
        return gone

    def _collect_garbage(self, owner_uid: str | None):
        """Background cascading deletion: dependents of a deleted owner go too."""
        if not owner_uid:
            return
        for kind in KINDS:
            for obj in list(self.objects[kind.key].values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    remaining = [r for r in refs if r.get("uid") != owner_uid]
                    if remaining and any(self._uid_exists(r.get("uid")) for r in remaining):
                        continue
                    self.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _uid_exists(self, uid):
        return any(o["metadata"].get("uid") == uid for objs in self.objects.values() for o in objs.values())

    def delete(self, kind: Kind, ns: str | None, name: str) -> dict:
        obj = self.get(kind, ns, name)
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            obj = {**obj, "metadata": dict(obj["metadata"])}
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self._put(kind, (obj["metadata"].get("namespace", ""), name), obj)
            self.emit(kind, "MODIFIED", obj)
            return obj
        return self._remove(kind, obj)

    async def apply(self, kind: Kind, ns: str | None, name: str, applied: dict, manager: str,
                    subresource: str | None) -> tuple[dict, bool]:
        """Server-side apply: merge the applied configuration (list-maps by item key, see Shape), and remove what the
        same manager applied last time but not this time, unless another manager applied it too: for a list-map
        that is per item, so items of other managers stay. Ownership is the last configuration each manager applied
        (not computed from managedFields); the object's managedFields are written from it, Apply entries only."""
        applied = dict(applied)
        applied["metadata"] = dict(applied.get("metadata") or {})
        applied["metadata"]["name"] = name
        if kind.namespaced:
            applied["metadata"]["namespace"] = ns
        sub = subresource or ""
        key = (kind.key, ns or "", name)
        shape = self.shapes.get(kind.key)
        existing = self.objects[kind.key].get((ns or "", name))
        scope = (lambda o: {"status": o.get("status")} if "status" in o else {}) if sub == "status" else (
            lambda o: {k: v for k, v in o.items() if not (kind.status and k == "status")})
        config = scope(applied)
        if sub != "status":
            config["metadata"] = {k: v for k, v in applied["metadata"].items()
                                  if k in ("name", "namespace", "labels", "annotations", "ownerReferences",
                                           "finalizers")}
        managers = {**self.applied.get(key, {}), (manager, sub): config}
        if existing is None:
            if sub == "status":
                raise not_found(kind, name)
            body = clone(config)
            body["metadata"]["managedFields"] = self._managed_fields(kind, managers, [])
            created = await self.create(kind, ns, body)
            self.applied[key] = managers
            return created, True
        previous = self.applied.get(key, {}).get((manager, sub), {})
        merged = deep_merge(existing, config, shape)
        kept = {p for (m, s), cfg in managers.items() if (m, s) != (manager, sub) for p in leaf_paths(cfg, shape)}
        now_paths = set(leaf_paths(config, shape))
        for path in leaf_paths(previous, shape):
            if path and path not in now_paths and path not in kept and path[0] != "apiVersion" and path[0] != "kind":
                if path[:2] in (("metadata", "name"), ("metadata", "namespace")):
                    continue
                remove_path(merged, path)
        merged["metadata"] = dict(merged["metadata"])
        merged["metadata"]["managedFields"] = self._managed_fields(
            kind, managers, existing["metadata"].get("managedFields") or [])
        result = await self.update(kind, ns, name, merged, subresource, check_rv=False)
        self.applied[key] = managers
        return result, False

    def _managed_fields(self, kind: Kind, managers: dict, before: list) -> list:
        """One Apply entry per manager and subresource. An entry keeps its time while its fields do not change, so
        a repeated identical apply stays a no-op write."""
        shape = self.shapes.get(kind.key)
        times = {(e.get("manager"), e.get("subresource", "")): (e.get("fieldsV1"), e.get("time")) for e in before}
        out = []
        for (manager, sub), cfg in managers.items():
            owned = {k: v for k, v in cfg.items() if k not in ("apiVersion", "kind")}
            if "metadata" in owned:
                owned["metadata"] = {k: v for k, v in owned["metadata"].items() if k not in ("name", "namespace")}
                if not owned["metadata"]:
                    del owned["metadata"]
            fields = fields_v1(owned, shape)
            old_fields, old_time = times.get((manager, sub), (None, None))
            entry = {"manager": manager, "operation": "Apply", "apiVersion": kind.api_version,
                     "time": old_time if old_fields == fields and old_time else now_rfc3339(),
                     "fieldsType": "FieldsV1", "fieldsV1": fields}
            if sub:
                entry["subresource"] = sub
            out.append(entry)
        return out


# --- HTTP ------------------------------------------------------------------------------------------------------

def json_response(obj, status=200):
    return web.Response(body=dumps(obj), status=status, content_type="application/json")


def metadata_only(request) -> bool:
    """The client asked for metadata only (`Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;
    v=v1`), as kube-rs does for `Api<PartialObjectMeta<K>>`: the server then strips everything but metadata."""
    return "as=PartialObjectMetadata" in request.headers.get("Accept", "")


def partial(obj: dict) -> dict:
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}


def parse_path(path: str):
    """-> (kind, namespace, name, subresource) or None."""
    segs = [s for s in path.split("/") if s]
    if segs[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
        ns, rest = rest[1], rest[2:]
    if not rest:
        return None
    kind = BY_PATH.get((group, version, rest[0]))
    if kind is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return kind, ns, name, sub


class Server:
    def __init__(self, store: Store):
        self.store = store

    async def discovery(self, request: web.Request):
        path = request.path.rstrip("/")
        if path == "/version":
            return json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-infergate-standin",
                                  "platform": "linux/amd64"})
        if path == "/api":
            return json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                  "serverAddress": request.host}]})
        if path == "/apis":
            groups = []
            for group, kinds in GROUPS.items():
                if not group:
                    continue
                gv = {"groupVersion": f"{group}/{kinds[0].version}", "version": kinds[0].version}
                groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
            return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        segs = [s for s in path.split("/") if s]
        if segs == ["api", "v1"]:
            return json_response({"kind": "APIResourceList", "groupVersion": "v1",
                                  "resources": self._resources("")})
        if len(segs) == 3 and segs[0] == "apis" and segs[1] in GROUPS:
            return json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": f"{segs[1]}/{segs[2]}", "resources": self._resources(segs[1])})
        if len(segs) == 2 and segs[0] == "apis" and segs[1] in GROUPS:
            kinds = GROUPS[segs[1]]
            gv = {"groupVersion": f"{segs[1]}/{kinds[0].version}", "version": kinds[0].version}
            return json_response({"kind": "APIGroup", "apiVersion": "v1", "name": segs[1], "versions": [gv],
                                  "preferredVersion": gv})
        if path == "/openapi/v2":
            if "protobuf" in request.headers.get("Accept", ""):
                # A gnostic openapi_v2.Document with only `swagger: "2.0"`: kubectl parses it and finds no schema.
                return web.Response(body=b"\x0a\x032.0",
                                    content_type="application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
            return json_response({"swagger": "2.0", "info": {"title": "infergate-standin", "version": "v1.33.0"},
                                  "paths": {}, "definitions": {}})
        if path == "/openapi/v3":
            paths = {}
            for group, kinds in GROUPS.items():
                gv = f"api/{kinds[0].version}" if not group else f"apis/{group}/{kinds[0].version}"
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=standin"}
            return json_response({"paths": paths})
        if path.startswith("/openapi/v3/"):
            return json_response(self._openapi_v3(path[len("/openapi/v3/"):]))
        return json_response(status_obj(404, "NotFound", f"the server could not find the requested resource "
                                                          f"({request.path})"), 404)

    def _openapi_v3(self, gv: str) -> dict:
        """Just enough for kubectl to see that the server validates fields itself (`fieldValidation` on PATCH),
        so that it sends objects here instead of validating them against a client-side schema."""
        segs = gv.split("/")
        group = "" if segs[0] == "api" else segs[1]
        paths = {}
        for k in GROUPS.get(group, []):
            prefix = f"/{gv}/namespaces/{{namespace}}" if k.namespaced else f"/{gv}"
            op = {"x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                  "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                                 {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}],
                  "responses": {"200": {"description": "OK"}}}
            paths[f"{prefix}/{k.plural}/{{name}}"] = {"get": op, "put": op, "patch": op, "delete": op}
            paths[f"{prefix}/{k.plural}"] = {"get": op, "post": op}
        return {"openapi": "3.0.0", "info": {"title": "infergate-standin", "version": "v1.33.0"}, "paths": paths,
                "components": {"schemas": {}}}

    def _resources(self, group):
        out = []
        for k in GROUPS.get(group, []):
            out.append(k.resource())
            if k.status:
                out.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                            "kind": k.kind, "verbs": ["get", "patch", "update"]})
        return out

    async def handle(self, request: web.Request):
        self.store.requests += 1
        parsed = parse_path(request.path)
        if parsed is None:
            return await self.discovery(request)
        kind, ns, name, sub = parsed
        try:
            if request.method == "GET":
                if name is None:
                    if request.query.get("watch") in ("true", "1"):
                        return await self.watch(request, kind, ns)
                    return self.list(request, kind, ns)
                obj = self.store.get(kind, ns, name)
                return json_response(partial(obj) if metadata_only(request) else obj)
            if request.method == "POST" and name is None:
                body = await self.body(request)
                obj = await self.store.create(kind, ns, body)
                return json_response(obj, 201)
            if request.method == "PUT" and name:
                body = await self.body(request)
                return json_response(await self.store.update(kind, ns, name, body, sub))
            if request.method == "PATCH" and name:
                return await self.patch(request, kind, ns, name, sub)
            if request.method == "DELETE" and name:
                obj = self.store.delete(kind, ns, name)
                return json_response(obj)
            return json_response(status_obj(405, "MethodNotAllowed", f"{request.method} is not supported here"),
                                 405)
        except ApiError as e:
            return json_response(e.body, e.code)

    async def body(self, request):
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        try:
            # JSON is YAML, and clients (kube-rs, kubectl) send apply-patch+yaml bodies as JSON: try the fast
            # parser first.
            if "yaml" in ctype and not raw.lstrip()[:1] in (b"{", b"["):
                return yaml.load(raw, Loader=_YAML_LOADER)
            try:
                return loads(raw)
            except ValueError:
                if "yaml" not in ctype:
                    raise
                return yaml.load(raw, Loader=_YAML_LOADER)
        except Exception as e:  # noqa: BLE001 - any parse error is the client's
            raise ApiError(400, "BadRequest", f"the request body could not be decoded: {e}") from None

    async def patch(self, request, kind, ns, name, sub):
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self.body(request)
        if ctype == "application/apply-patch+yaml":
            manager = request.query.get("fieldManager")
            if not manager:
                raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
            obj, created = await self.store.apply(kind, ns, name, body, manager, sub)
            return json_response(obj, 201 if created else 200)
        current = self.store.get(kind, ns, name)
        if ctype == "application/json-patch+json":
            new = json_patch(current, body)
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(current, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
        if sub != "status":
            # A merge patch shares unpatched maps with the stored object: copy metadata before writing to it.
            new["metadata"] = dict(new.get("metadata") or {})
            new["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get(
                "resourceVersion") if isinstance(body, dict) else None
        return json_response(await self.store.update(kind, ns, name, new, sub,
                                                     check_rv=isinstance(body, dict)))

    def list(self, request, kind, ns):
        """Pages with `limit`/`continue` as a real server does (kube-rs asks for 500 at a time). The continue
        token carries the resourceVersion of the first page, so a client that watches from the list's version
        replays whatever changed while it was paging."""
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        items = [o for o in self.store.list(kind, ns)
                 if labels(o["metadata"].get("labels")) and fields(o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        token = request.query.get("continue")
        start, list_rv = 0, str(self.store.rv)
        if token:
            try:
                start, list_rv = json.loads(base64.urlsafe_b64decode(token.encode()))
            except Exception:  # noqa: BLE001 - any bad token is the client's
                raise ApiError(400, "BadRequest", "the continue token is not valid") from None
        limit = int(request.query.get("limit") or 0)
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta = {"resourceVersion": list_rv}
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps([start + limit, list_rv]).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        if kind.key == SECRETS:
            self.store.secret_reads.append(["list", request.query.get("labelSelector", ""), metadata_only(request)])
        if metadata_only(request):
            self.store.metadata_requests += 1
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": meta, "items": [partial(o) for o in page]})
        return json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta,
                              "items": page})

    async def watch(self, request, kind, ns):
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        timeout = min(int(request.query.get("timeoutSeconds") or 1800), 1800)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        since = request.query.get("resourceVersion") or ""
        since_rv = int(since) if since.isdigit() else self.store.rv
        meta_only = metadata_only(request)
        if meta_only:
            self.store.metadata_requests += 1
        if kind.key == SECRETS:
            self.store.secret_reads.append(["watch", request.query.get("labelSelector", ""), meta_only])

        def matches(obj):
            meta = obj["metadata"]
            return (ns is None or meta.get("namespace") == ns) and labels(meta.get("labels")) and fields(obj)

        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        watcher = Watcher(loop)
        # Register first, then replay: nothing written in between can be lost.
        self.store.watchers[kind.key].add(watcher)
        # Last state this watch reported per object, to turn "stopped matching the selector" into DELETED.
        seen: dict[tuple, bool] = {}
        last = since_rv

        def encode(entries) -> bytes:
            """The lines this watch sends for `entries`: each event was encoded once by `Store.emit`, so this only
            filters and joins."""
            nonlocal last
            out = []
            for rv, etype, obj, line in entries:
                if rv <= last:
                    continue
                last = rv
                meta = obj["metadata"]
                if matches(obj):
                    seen[(meta.get("namespace", ""), meta["name"])] = True
                    out.append(dumps({"type": etype, "object": partial(obj)}) + b"\n" if meta_only else line)
                elif etype != "DELETED" and seen.pop((meta.get("namespace", ""), meta["name"]), False):
                    out.append(dumps({"type": "DELETED", "object": partial(obj) if meta_only else obj}) + b"\n")
            return b"".join(out)

        try:
            data = encode([e for e in self.store.history[kind.key] if e[0] > since_rv])
            if data:
                await resp.write(data)
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                if not await watcher.wait(min(left, 5.0)):
                    if bookmarks:
                        bm = {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                                             "metadata": {"resourceVersion": str(self.store.rv)}}}
                        await resp.write(dumps(bm) + b"\n")
                        last = max(last, self.store.rv)
                    continue
                # Everything queued since the last wake-up goes out in one write.
                data = encode(watcher.take())
                if data:
                    await resp.write(data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers[kind.key].discard(watcher)
        return resp

    # Test hooks, not Kubernetes API.
    async def bulk(self, request):
        """POST a JSON list of objects; created without validation (for benchmarks)."""
        objs = loads(await request.read())
        for obj in objs:
            api_version = obj["apiVersion"]
            group, _, version = api_version.rpartition("/")
            kind = next(k for k in KINDS if k.group == group and k.version == version and k.kind == obj["kind"])
            await self.store.create(kind, obj["metadata"].get("namespace"), obj, validate=False)
        return json_response({"created": len(objs)})

    async def stats(self, request):
        """Object counts; `labelled` counts Secrets by their `infergate.dev/component` label, `with_status` counts
        objects of each kind that have a status."""
        labelled = {c: n for c, n in self.store.labelled.items() if n}
        with_status = dict(self.store.with_status)
        return json_response({"requests": self.store.requests, "metadata_requests": self.store.metadata_requests,
                              "secret_reads": self.store.secret_reads[-200:],
                              "resourceVersion": self.store.rv,
                              "objects": {"/".join(k).strip("/"): len(v) for k, v in self.store.objects.items()},
                              "labelled": labelled, "with_status": with_status})


def write_kubeconfig(path: str, port: int):
    kc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "standin", "preferences": {},
        "clusters": [{"name": "standin", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "standin", "user": {"token": "standin"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                     "namespace": "default"}}],
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(kc, f)
    os.replace(tmp, path)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    ap.add_argument("--operator", help="infergate-operator binary used for schema validation")
    args = ap.parse_args()

    validator = Validator(args.operator)
    await validator.start()
    store = Store(validator, load_shapes(args.operator))
    server = Server(store)

    # aiohttp's low-level server: the stand-in routes every path itself, and skipping the Application's router and
    # middleware chain saves a noticeable share of the per-request CPU.
    # Fault injection (issue 15, item 8): `POST /standin/hold {"method", "contains"}` makes every later request
    # with that method whose path contains the text wait, unanswered and unapplied, until `POST /standin/release`;
    # `GET /standin/held` counts the requests waiting. A client killed while it waits leaves nothing behind (the
    # handler is cancelled with the connection), which is how a test stops an operator between two writes.
    holds: list[dict] = []
    held = {"waiting": 0, "release": asyncio.Event()}

    async def hold_control(request: web.BaseRequest):
        if request.path == "/standin/hold":
            holds.append(await request.json())
        elif request.path == "/standin/release":
            holds.clear()
            held["release"].set()
            held["release"] = asyncio.Event()
        return web.json_response({"holds": holds, "held": held["waiting"]})

    async def dispatch(request: web.BaseRequest):
        if request.path in ("/standin/hold", "/standin/release", "/standin/held"):
            return await hold_control(request)
        if any(h["method"] == request.method and h["contains"] in request.path for h in holds):
            held["waiting"] += 1
            try:
                await held["release"].wait()
            finally:
                held["waiting"] -= 1
        if request.path == "/standin/bulk" and request.method == "POST":
            return await server.bulk(request)
        if request.path == "/standin/stats" and request.method == "GET":
            return await server.stats(request)
        return await server.handle(request)

    def make_request(message, payload, protocol, writer, task):
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=256 * 1024 * 1024)

    runner = web.ServerRunner(web.Server(dispatch, request_factory=make_request, handler_cancellation=True,
                                         access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    if args.kubeconfig:
        write_kubeconfig(args.kubeconfig, port)
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await validator.close()
    await runner.cleanup()


def run():
    try:
        import uvloop  # tests/requirements.txt; a faster event loop, optional
        if os.environ.get("STANDIN_LOOP") == "asyncio":  # for comparing the two loops in the bench
            raise ImportError
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    # STANDIN_PROFILE=/path: write cProfile stats there on a clean shutdown (for tests/bench/operator_scale.py).
    if os.environ.get("STANDIN_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
        try:
            run()
        finally:
            prof.disable()
            prof.dump_stats(os.environ["STANDIN_PROFILE"])
    else:
        run()
