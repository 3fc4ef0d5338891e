"""The AWS calls a Lambda handler can make, found statically (AST) in functions/: what test_iam.py compares
with the function's IAM policy. moto never checks IAM, so nothing else would see a missing or extra grant.

From the handler's module, every function it references is followed (calls, functions passed as values,
methods of the dataclasses it builds), with the values that reach each parameter. A call is `recv.op(...)`
where `recv` is `client("svc")`, `table(name)` (ivadas_functions.aws) or a name or field such a value reached;
`generate_presigned_url("op", Params=...)` is the call it signs; powertools' DynamoDBPersistenceLayer brings
the calls its source makes. The resource of a call is followed to an environment variable (`settings.x`,
`os.environ`), which the template sets, or to the bucket named in the S3 event (the inbox's notifications).
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import botocore.session
from botocore import xform_name

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
AWS_MODULE = "ivadas_functions.aws"
EVENT_BUCKET = ("event-bucket",)  # the bucket an S3 event names: the one whose notifications feed the queue
#: The parameter naming the resource, per service (S3 also takes `Bucket` inside Params / CopySource).
RESOURCE_PARAMS = {"s3": "Bucket", "dynamodb": "TableName", "sagemaker-runtime": "EndpointName",
                   "sqs": ("QueueName", "QueueUrl"), "ssm": "Name"}  # fmt: skip
#: S3 operations whose IAM action is not their name (AWS: "Actions, resources, and condition keys for S3").
S3_ACTIONS = {
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "ListObjectsV2": "ListBucket",
    "CopyObject": "PutObject",
}  # fmt: skip  (the copy's source: a GetObject call of its own)
#: S3 answers a missing key with 404 only to a caller that may list the bucket (403 otherwise), so a read
#: whose function tells a missing object apart (it names the error code) needs s3:ListBucket too.
MISSING_KEY = "NoSuchKey"


@dataclass(frozen=True)
class Call:
    service: str  # botocore's service name
    operation: str  # botocore's operation name
    resource: tuple | None  # ("env", VAR), EVENT_BUCKET, or None when not statically known
    where: str  # file:line
    tells_missing: bool = False  # an S3 read whose caller handles NoSuchKey

    def actions(self) -> list[tuple[str, tuple | None]]:
        """(IAM action, resource) pairs this call needs."""
        prefix = _service_model(self.service).signing_name
        if self.service == "s3":
            action = S3_ACTIONS.get(self.operation, self.operation)
            lists = self.tells_missing and action == "GetObject"
            listing = [("s3:ListBucket", self.resource)] if lists else []
            return [(f"s3:{action}", self.resource), *listing]
        return [(f"{prefix}:{self.operation}", self.resource)]


@cache
def _service_model(service: str):  # noqa: ANN202
    return botocore.session.get_session().get_service_model(service)


@cache
def operations(service: str) -> dict[str, str]:
    """snake_case method name -> operation name, from botocore's service model."""
    return {xform_name(op): op for op in _service_model(service).operation_names}


@cache
def _settings_fields() -> dict[str, str]:
    """Settings field -> the environment variable `Settings.from_env` reads it from (`required("X")`, or
    `env.get("X")` for one only some functions have)."""
    tree = _module("ivadas_functions.aws")
    fields = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Call):
            call = node.value
            named = isinstance(call.func, ast.Name) and call.func.id == "required"
            got = isinstance(call.func, ast.Attribute) and call.func.attr == "get"
            if (named or got) and call.args and isinstance(call.args[0], ast.Constant):
                fields[node.arg] = call.args[0].value
    return fields


def _endpoint_variables() -> list[str]:
    from ivadas_contract.models import MODELS, endpoint_variable

    return [endpoint_variable(m) for m in MODELS]


@cache
def _module(name: str) -> ast.Module:
    path = FUNCTIONS / (name.replace(".", "/") + ".py")
    return ast.parse(path.read_text(), filename=str(path))


def _is_module(name: str) -> bool:
    return (FUNCTIONS / (name.replace(".", "/") + ".py")).exists()


@cache
def _persistence_calls() -> tuple[str, ...]:
    """The DynamoDB operations powertools' idempotency layer makes (`self.client.op(...)` in its source)."""
    from aws_lambda_powertools.utilities.idempotency.persistence import dynamodb

    tree = ast.parse(inspect.getsource(dynamodb))
    ops = operations("dynamodb")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            recv = node.func.value
            if isinstance(recv, ast.Attribute) and recv.attr == "client" and node.func.attr in ops:
                found.add(ops[node.func.attr])
    return tuple(sorted(found))


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class Scope:
    """One module's names: its functions and classes (methods as `Cls.meth`), imports and globals."""

    def __init__(self, module: str) -> None:
        self.module, self.tree = module, _module(module)
        self.defs: dict[str, ast.AST] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.imports: dict[str, tuple] = {}
        self.globals: dict[str, list[ast.AST]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.defs[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self.defs[f"{node.name}.{item.name}"] = item
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    self.imports[alias.asname or alias.name] = (
                        ("module", full) if _is_module(full) else ("sym", node.module, alias.name)
                    )
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.globals.setdefault(target.id, []).append(node.value)

    def fields(self, cls: str) -> list[str]:
        return [n.target.id for n in self.classes[cls].body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]  # fmt: skip


class Finder:
    """Follows a handler module's functions to the AWS calls they make."""

    def __init__(self, handler_module: str) -> None:
        self.scopes: dict[str, Scope] = {}
        self.bindings: dict[tuple, set] = {}  # (module, qualname, param) -> values
        self.reachable: set[tuple[str, str]] = set()
        self.calls: set[Call] = set()
        self.unfindable: list[str] = []
        self._local_cache: dict[tuple, dict[str, list[ast.AST]]] = {}
        entry = self.scope(handler_module)
        self.reachable |= {(handler_module, q) for q in entry.defs}
        self.modules = {handler_module}

    def scope(self, module: str) -> Scope:
        if module not in self.scopes:
            self.scopes[module] = Scope(module)
        return self.scopes[module]

    def run(self) -> set[Call]:
        for _ in range(20):  # to a fixed point: parameters' values flow in from every call site
            before = (len(self.reachable), sum(len(v) for v in self.bindings.values()))
            self.calls, self.unfindable = set(), []  # what the last pass, with every binding known, finds
            for module in sorted(self.modules | {m for m, _ in self.reachable}):
                top = [s for s in self.scope(module).tree.body if not isinstance(s, _DEFS)]
                self._visit(module, None, top)
            for module, qual in sorted(self.reachable):
                node = self.scope(module).defs[qual]
                self._visit(module, qual, node.body)
            if before == (len(self.reachable), sum(len(v) for v in self.bindings.values())):
                return self.calls
        raise RuntimeError("the call finder did not settle")

    # ------------------------------------------------------------------------------------ values
    def _locals(self, module: str, qual: str | None) -> dict[str, list[ast.AST]]:
        if qual is None:
            return {}
        if (module, qual) in self._local_cache:
            return self._local_cache[(module, qual)]
        out = self._local_cache[(module, qual)] = {}
        for node in ast.walk(self.scope(module).defs[qual]):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        out.setdefault(target.id, []).append(node.value)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if isinstance(t, ast.Name):
                                out.setdefault(t.id, []).append(v)
        return out

    def _params(self, module: str, qual: str) -> list[str]:
        node = self.scope(module).defs[qual]
        return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]

    def value(self, module: str, qual: str | None, node: ast.AST, seen: frozenset = frozenset()) -> set:
        """The abstract values an expression can have."""
        key = (module, qual, id(node))
        if key in seen:
            return set()
        seen = seen | {key}
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {("str", node.value)}
        if isinstance(node, ast.Name):
            return self._name(module, qual, node.id, seen)
        if isinstance(node, ast.Attribute):
            return self._attribute(module, qual, node, seen)
        if isinstance(node, ast.Subscript):
            base = self.value(module, qual, node.value, seen)
            if ("endpoints",) in base:
                return {("env", v) for v in _endpoint_variables()}
            if isinstance(node.slice, ast.Constant) and node.slice.value == "bucket":
                return {EVENT_BUCKET}  # a record's "bucket" is the inbox object's (inspection.py)
            environ = isinstance(node.value, ast.Attribute) and node.value.attr == "environ"
            if environ and isinstance(node.slice, ast.Constant):
                return {("env", node.slice.value)}
            return {v for v in base if v[0] == "result"}
        if isinstance(node, ast.Call):
            return self._call_value(module, qual, node, seen)
        return set()

    def _name(self, module: str, qual: str | None, name: str, seen: frozenset) -> set:
        scope = self.scope(module)
        local = self._locals(module, qual)
        if name in local:
            return set().union(*(self.value(module, qual, v, seen) for v in local[name]))
        if qual is not None and name in self._params(module, qual):
            return set(self.bindings.get((module, qual, name), set()))
        if name in scope.defs:
            return {("func", module, name)}
        if name in scope.classes:
            return {("class", module, name)}
        if name in scope.imports:
            imp = scope.imports[name]
            if imp[0] == "module":
                return {imp}
            return self._symbol(imp[1], imp[2])
        if name in scope.globals:
            return set().union(*(self.value(module, None, v, seen) for v in scope.globals[name]))
        return set()

    def _symbol(self, module: str, name: str) -> set:
        if not _is_module(module):
            return {("ext", module, name)}
        scope = self.scope(module)
        if name in scope.defs:
            return {("func", module, name)}
        if name in scope.classes:
            return {("class", module, name)}
        if name in scope.imports:
            imp = scope.imports[name]
            return {imp} if imp[0] == "module" else self._symbol(imp[1], imp[2])
        return set().union(*(self.value(module, None, v) for v in scope.globals.get(name, [])))

    def _attribute(self, module: str, qual: str | None, node: ast.Attribute, seen: frozenset) -> set:
        if node.attr == "name" and isinstance(node.value, ast.Attribute) and node.value.attr == "bucket":
            return {EVENT_BUCKET}  # an S3 event record's s3.bucket.name
        out = set()
        for base in self.value(module, qual, node.value, seen):
            if base == ("settings",):
                if node.attr == "endpoints":
                    out.add(("endpoints",))
                elif node.attr in _settings_fields():
                    out.add(("env", _settings_fields()[node.attr]))
            elif base[0] == "module":
                out |= self._symbol(base[1], node.attr)
            elif base[0] == "inst":
                _, mod, cls = base
                if f"{cls}.{node.attr}" in self.scope(mod).defs:
                    out.add(("method", mod, f"{cls}.{node.attr}", base))
                out |= self.bindings.get((mod, cls, "." + node.attr), set())
            elif base[0] == "class" and node.attr == "from_env" and base[2] == "Settings":
                out.add(("settings-factory",))
        return out

    def _call_value(self, module: str, qual: str | None, node: ast.Call, seen: frozenset) -> set:
        out = set()
        for callee in self.value(module, qual, node.func, seen):
            if callee == ("func", AWS_MODULE, "client"):
                names = self.value(module, qual, node.args[0], seen)
                out |= {("client", v[1]) for v in names if v[0] == "str"}
            elif callee == ("func", AWS_MODULE, "table"):
                out |= {("table", v) for v in self.value(module, qual, node.args[0], seen)}
            elif callee == ("settings-factory",):
                out.add(("settings",))
            elif callee[0] == "class":
                out.add(("inst", callee[1], callee[2]))
        if isinstance(node.func, ast.Attribute):  # a call's answer, e.g. get_queue_url(...)["QueueUrl"]
            kwargs = {k.arg: k.value for k in node.keywords}
            for recv in self.value(module, qual, node.func.value, seen):
                names = RESOURCE_PARAMS.get(recv[1], ()) if recv[0] == "client" else ()
                for name in (names,) if isinstance(names, str) else names:
                    if name in kwargs:
                        out |= {("result", v) for v in self.value(module, qual, kwargs[name], seen)}
        func = node.func
        environ = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute)
        if environ and func.attr == "get" and func.value.attr == "environ" and node.args:  # os.environ.get
            out |= {("env", v[1]) for v in self.value(module, qual, node.args[0], seen) if v[0] == "str"}
        return out

    # ------------------------------------------------------------------------------------ visiting
    def _bind(self, module: str, qual: str, args: list, keywords: list, caller: tuple, skip_self: bool
              ) -> None:  # fmt: skip
        params = self._params(module, qual)
        if skip_self:
            params = params[1:]
        for param, arg in zip(params, args, strict=False):
            self._add((module, qual, param), self.value(*caller, arg))
        for kw in keywords:
            if kw.arg in params:
                self._add((module, qual, kw.arg), self.value(*caller, kw.value))

    def _add(self, key: tuple, values: set) -> None:
        self.bindings.setdefault(key, set()).update(values)

    def _visit(self, module: str, qual: str | None, body: list) -> None:
        where = (module, qual)
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call):
                    self._visit_call(where, node)
                elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                    for v in self.value(module, qual, node):
                        if v[0] == "func":
                            self._reach(v[1], v[2])
                        elif v[0] == "method":
                            self._reach(v[1], v[2])
                            self._add((v[1], v[2], "self"), {v[3]})
                    if isinstance(node, ast.Attribute):
                        self._visit_op(where, node)

    def _reach(self, module: str, qual: str) -> None:
        if module != AWS_MODULE or qual not in ("client", "table"):
            self.reachable.add((module, qual))

    def _visit_call(self, where: tuple, node: ast.Call) -> None:
        module, qual = where
        for callee in self.value(module, qual, node.func):
            if callee[0] == "func":
                self._reach(callee[1], callee[2])
                self._bind(callee[1], callee[2], node.args, node.keywords, where, False)
            elif callee[0] == "method":
                self._reach(callee[1], callee[2])
                self._add((callee[1], callee[2], "self"), {callee[3]})
                self._bind(callee[1], callee[2], node.args, node.keywords, where, True)
            elif callee[0] == "class":
                self._construct(callee[1], callee[2], node, where)
            elif callee == ("ext", "aws_lambda_powertools.utilities.idempotency", "DynamoDBPersistenceLayer"):
                table = next((k.value for k in node.keywords if k.arg == "table_name"), None)
                for res in self.value(module, qual, table) if table is not None else {None}:
                    for op in _persistence_calls():
                        self.calls.add(Call("dynamodb", op, res, self._where(module, node)))
        if isinstance(node.func, ast.Attribute) and node.func.attr == "submit" and node.args:
            self._submit(where, node)
        named = isinstance(node.func, ast.Name) and node.func.id == "client"
        if named and not (node.args and isinstance(node.args[0], ast.Constant)):
            self.unfindable.append(f"{self._where(module, node)}: client() of a service not written out")

    def _submit(self, where: tuple, node: ast.Call) -> None:
        """pool.submit(fn, *args): fn is called with args."""
        for fn in self.value(*where, node.args[0]):
            if fn[0] == "func":
                self._bind(fn[1], fn[2], node.args[1:], node.keywords, where, False)

    def _construct(self, module: str, cls: str, node: ast.Call, caller: tuple) -> None:
        fields = self.scope(module).fields(cls)
        for name, arg in zip(fields, node.args, strict=False):
            self._add((module, cls, "." + name), self.value(*caller, arg))
        for kw in node.keywords:
            if kw.arg in fields:
                self._add((module, cls, "." + kw.arg), self.value(*caller, kw.value))

    def _where(self, module: str, node: ast.AST) -> str:
        return f"functions/{module.replace('.', '/')}.py:{node.lineno}"

    def _visit_op(self, where: tuple, node: ast.Attribute) -> None:
        module, qual = where
        for recv in self.value(module, qual, node.value):
            if recv[0] == "table" and node.attr in operations("dynamodb"):
                self.calls.add(Call("dynamodb", operations("dynamodb")[node.attr], recv[1],
                                    self._where(module, node)))  # fmt: skip
            elif recv[0] == "client":
                self._client_op(where, node, recv[1])

    def _client_op(self, where: tuple, node: ast.Attribute, service: str) -> None:
        module, qual = where
        call = self._parent_call(module, node)
        kwargs = {k.arg: k.value for k in call.keywords} if call else {}
        op_name = node.attr
        if node.attr in ("generate_presigned_url", "get_paginator") and call and call.args:
            first = call.args[0]
            op_name = first.value if isinstance(first, ast.Constant) else ""
            params = kwargs.get("Params")
            kwargs = _dict_items(params) if isinstance(params, ast.Dict) else {}
        if op_name not in operations(service):
            return  # exceptions, meta, waiters: no request
        op = operations(service)[op_name]
        missing = service == "s3" and self._tells_missing(module, qual)
        found = False
        names = RESOURCE_PARAMS.get(service, ())
        for name in (names,) if isinstance(names, str) else names:
            if name in kwargs:
                found = True
                for res in self.value(module, qual, kwargs[name]) or {None}:
                    res = res[1] if res and res[0] == "result" else res
                    self.calls.add(Call(service, op, _resource(res), self._where(module, node), missing))
        if not found:
            self.calls.add(Call(service, op, None, self._where(module, node), missing))
        source = kwargs.get("CopySource")
        if op == "CopyObject" and isinstance(source, ast.Dict):  # the copy reads its source
            for res in self.value(module, qual, _dict_items(source).get("Bucket")) or {None}:
                self.calls.add(Call(service, "GetObject", _resource(res), self._where(module, node)))

    def _tells_missing(self, module: str, qual: str | None) -> bool:
        """The function names NoSuchKey, itself or through a module constant (inspector._MISSING)."""
        if qual is None:
            return False
        scope = self.scope(module)
        for node in ast.walk(scope.defs[qual]):
            if isinstance(node, ast.Constant) and node.value == MISSING_KEY:
                return True
            named = isinstance(node, ast.Name) and node.id in scope.globals
            if named and any(isinstance(c, ast.Constant) and c.value == MISSING_KEY
                             for v in scope.globals[node.id] for c in ast.walk(v)):  # fmt: skip
                return True
        return False

    @cache  # noqa: B019 - one finder per test
    def _parents(self, module: str) -> dict[int, ast.AST]:
        return {id(c): p for p in ast.walk(self.scope(module).tree) for c in ast.iter_child_nodes(p)}

    def _parent_call(self, module: str, node: ast.Attribute) -> ast.Call | None:
        parent = self._parents(module).get(id(node))
        return parent if isinstance(parent, ast.Call) and parent.func is node else None


def _dict_items(node: ast.Dict) -> dict[str, ast.AST]:
    return {k.value: v for k, v in zip(node.keys, node.values, strict=False) if isinstance(k, ast.Constant)}


def _resource(value: tuple | None) -> tuple | None:
    return value if value and value[0] in ("env", "event-bucket") else None


def aws_calls(handler_module: str) -> tuple[set[Call], list[str]]:
    """Every AWS call the handler module can make, and the call sites the finder cannot read."""
    finder = Finder(handler_module)
    calls = finder.run()
    return calls, finder.unfindable
